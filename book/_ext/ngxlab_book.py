"""The book's own additions to Sphinx.

- An ``.ipynb`` download for every chapter (below).
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

from pathlib import Path
from shutil import copy2


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
    app.connect("html-page-context", one_of_each_script, priority=100)
    # before the theme's header buttons (priority 501), which read ipynb_source
    app.connect("html-page-context", ipynb_download, priority=500)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
