"""A figure's caption and alt text in the Chinese edition.

A figure drawn by a code cell takes its caption and its image's alt text from
the cell's options (``mystnb: figure: caption:`` and ``image: alt:``). A
Chinese page's code cells are its English page's, byte for byte, options
included (the execution cache keys a cell on all of it, and the Chinese page
reuses the English outputs), so those options stay English. The Chinese page
gives its own in its prose, right after the cell::

    ```{figure-text} fig-spawn-cost
    :alt: 两个上下叠放的面板……
    每次调用……
    ```

The directive's argument is the figure's ``name``; its content is the
caption (one paragraph, MyST inline markup), ``:alt:`` the image's alt text.
It shows nothing where it stands. When the page has been read (myst-nb has
turned the cell's output into a figure node by then), the figure of that name
on the same page gets the caption's text (the caption node itself stays, so
Sphinx numbers the figure as before: 图 N) and every image in it gets the alt
text. A name that is no figure of the page, or that two blocks name, is an
error (``-W`` fails the build on it). English pages never use it.
"""

from __future__ import annotations

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.transforms import Transform
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)


class figure_text(nodes.Element, nodes.Invisible):
    """The Chinese text of a figure elsewhere on the page; removed once applied."""


class FigureText(SphinxDirective):
    required_arguments = 1
    final_argument_whitespace = False
    has_content = True
    option_spec = {"alt": directives.unchanged_required}

    def run(self) -> list[nodes.Node]:
        node = figure_text()
        self.set_source_info(node)
        node["figure"] = nodes.fully_normalize_name(self.arguments[0])
        node["alt"] = " ".join(self.options.get("alt", "").split())
        holder = nodes.Element()
        self.state.nested_parse(self.content, self.content_offset, holder)
        node.extend(holder.children)
        problems = []
        if "alt" not in self.options:
            problems.append("no :alt:")
        if len(holder.children) != 1 or not isinstance(holder.children[0], nodes.paragraph):
            problems.append("its content must be one paragraph, the caption")
        if problems:
            logger.error("figure-text %s: %s", self.arguments[0], "; ".join(problems),
                         location=node, type="ngxlab", subtype="figure-text")
        return [node]


def figures_by_name(document: nodes.document) -> dict[str, list[nodes.figure]]:
    found: dict[str, list[nodes.figure]] = {}
    for fig in document.findall(nodes.figure):
        for name in fig["names"]:
            found.setdefault(name, []).append(fig)
    return found


class ApplyFigureText(Transform):
    """Put each figure-text block's caption and alt text into its figure."""

    # After the page is parsed (myst-nb's figures are in it), before the
    # doctree-read event (880), where the std domain records a figure's
    # caption as the title {ref} shows.
    default_priority = 500

    def apply(self, **kwargs) -> None:
        blocks = list(self.document.findall(figure_text))
        if not blocks:
            return
        figures = figures_by_name(self.document)
        done: set[str] = set()
        for block in blocks:
            name = block["figure"]
            block.parent.remove(block)
            if name in done:
                self.error(block, f"figure-text {name}: a second block for the same figure")
                continue
            done.add(name)
            found = figures.get(name, [])
            if len(found) != 1:
                self.error(block, f"figure-text {name}: "
                           + ("no figure of that name on this page" if not found
                              else f"{len(found)} figures of that name on this page"))
                continue
            fig = found[0]
            paragraphs = [c for c in block.children if isinstance(c, nodes.paragraph)]
            if paragraphs:
                text = paragraphs[0]
                caption = next(iter(fig.findall(nodes.caption)), None)
                if caption is None:
                    caption = nodes.caption(text.rawsource, "")
                    caption.source, caption.line = block.source, block.line
                    fig.append(caption)
                caption.rawsource = text.rawsource
                del caption[:]
                caption.extend(list(text.children))
            images = list(fig.findall(nodes.image))
            if not images:
                self.error(block, f"figure-text {name}: the figure has no image")
            for image in images:
                if block["alt"]:
                    image["alt"] = block["alt"]

    def error(self, block: nodes.Node, message: str) -> None:
        logger.error(message, location=block, type="ngxlab", subtype="figure-text")


def setup(app):
    app.add_node(figure_text)
    app.add_directive("figure-text", FigureText)
    app.add_transform(ApplyFigureText)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
