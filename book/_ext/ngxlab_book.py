"""The book's own additions to Sphinx.

- An ``.ipynb`` download for every chapter (below).
- A link to the page's counterpart in the other edition (below).
- The Chinese search in linear time (below).
- Each script once per page. sphinx-thebe adds its inline configuration
  (``const THEBE_JS_URL = ...``) with ``app.add_js_file(None, body=...)``
  after the HTML builder has started; Sphinx 7.4 then keeps it twice, once
  as given (file name ``None``) and once from its registry (file name
  ``""``), which do not compare equal, and every page logged "Identifier
  'THEBE_JS_URL' has already been declared". Scripts that differ only so
  are kept once.

The download:
sphinx-book-theme's download menu lists a page's ``.ipynb`` only when a launch
service (Binder, JupyterHub, Colab, thebe) is configured; this book has none.
This gives every executed chapter the same entry: the notebook as the build
ran it, outputs included, copied next to the page's source in ``_sources``.
"""

import posixpath
from html import escape
from pathlib import Path
from shutil import copy2

# The two editions, as they sit in the built site: the English pages are
# book/NAME.html (docname book/NAME in the English build), the Chinese ones
# zh/NAME.html (docname NAME in the Chinese build, whose source root is
# book/zh; make book copies its output into zh/).
EDITIONS = {
    # edition: (the site's folder of its pages, its language, the link's text)
    "en": ("book", "en", "English"),
    "zh": ("zh", "zh-CN", "中文"),
}


def ipynb_download(app, pagename, templatename, context, doctree):
    if doctree is None or getattr(app.builder, "format", None) != "html":
        return
    executed = Path(app.outdir).parent / "jupyter_execute" / f"{pagename}.ipynb"
    if not executed.is_file():
        return
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    copy2(executed, target)
    context["ipynb_source"] = f"{pagename}.ipynb"


def _counterpart(app, pagename):
    """(site path of this page, site path of its counterpart, the other
    edition) when the other edition has the page, else None."""
    edition = app.config.ngxlab_edition
    other = "zh" if edition == "en" else "en"
    if edition == "en":
        if not pagename.startswith("book/"):
            return None
        name = pagename.removeprefix("book/")
        source = Path(app.srcdir) / "book" / "zh" / f"{name}.md"
    else:
        name = pagename
        source = Path(app.srcdir).parent / f"{name}.md"
    if "/" in name or not source.is_file():
        return None
    here = f"{EDITIONS[edition][0]}/{name}.html"
    there = f"{EDITIONS[other][0]}/{name}.html"
    return here, there, other


def counterpart_link(app, pagename, templatename, context, doctree):
    """"中文 / English" at the top of the article: this edition's name, and a
    link to the same page in the other edition (and, for search engines, a
    link element in the head)."""
    if doctree is None or getattr(app.builder, "format", None) != "html":
        return
    found = _counterpart(app, pagename)
    if found is None:
        return
    here, there, other = found
    href = posixpath.relpath(there, posixpath.dirname(here))
    _folder, lang, label = EDITIONS[other]
    _f, own_lang, own_label = EDITIONS[app.config.ngxlab_edition]
    link = (f'<a class="ngx-counterpart reference external" href="{escape(href)}" '
            f'hreflang="{lang}" lang="{lang}">{escape(label)}</a>')
    own = f'<span class="ngx-edition" lang="{own_lang}">{escape(own_label)}</span>'
    parts = [own, link] if app.config.ngxlab_edition == "zh" else [link, own]
    switch = f'<p class="ngx-editions">{" / ".join(parts)}</p>\n'
    context["body"] = switch + context.get("body", "")
    context["metatags"] = context.get("metatags", "") + \
        f'\n<link rel="alternate" hreflang="{lang}" href="{escape(href)}" />'


class _TermSet(set):
    """A set that takes ``extend``, as the list it stands in for does."""

    def extend(self, items):
        self.update(items)


def chinese_search_in_linear_time(app, config):
    """Sphinx 7's Chinese search (sphinx.search.zh.SearchChinese) keeps every
    Latin word it has split in a list, ``latin_terms``, shared by the class,
    and looks each word it stems up in that list: indexing the book took
    minutes, most of them in that lookup. The same class with the words in
    a set of its own indexes the same words in seconds."""
    if config.ngxlab_edition != "zh":
        return
    from sphinx import search
    from sphinx.search.zh import SearchChinese

    class SearchChineseSet(SearchChinese):
        def init(self, options):
            super().init(options)
            self.latin_terms = _TermSet()

    search.languages["zh"] = SearchChineseSet


def one_of_each_script(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen, kept = set(), []
    for js in scripts:
        attributes = getattr(js, "attributes", {}) or {}
        key = (getattr(js, "filename", None) or "", getattr(js, "priority", None),
               tuple(sorted((k, str(v)) for k, v in attributes.items())))
        if key not in seen:
            seen.add(key)
            kept.append(js)
    scripts[:] = kept


def setup(app):
    # Which edition this build is: "en" (the repository's _config.yml) or
    # "zh" (the configuration tools/zh_edition.py writes for book/zh).
    app.add_config_value("ngxlab_edition", "en", "html", types=[str])
    app.connect("html-page-context", counterpart_link)
    app.connect("config-inited", chinese_search_in_linear_time)
    app.connect("html-page-context", one_of_each_script, priority=100)
    # before the theme's header buttons (priority 501), which read ipynb_source
    app.connect("html-page-context", ipynb_download, priority=500)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
