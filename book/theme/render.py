"""Render the book's MyST content into static HTML pages: the `build.render` step of this theme.

Jupyter Book 2 (mystmd) builds every page of ``book/myst.yml`` into a MyST AST, serves it from a
local "content server", and hands it to a *site template* that turns it into HTML. The stock
template, book-theme, is a React app that mystmd downloads from the internet at build time; it is
on no package registry. So the book ships this small template instead (``template.yml`` beside this
file). Its ``build.render`` command tells mystmd to run this script instead of starting an app
server: mystmd starts the content server, runs ``python3 render.py`` with

* ``CONTENT_CDN`` — the content server's URL (``/config.json``, ``/content/<slug>.json``, and the
  public files — pictures, notebook downloads — at ``/<name>``);
* ``BUILD_DIRECTORY`` — where the HTML goes (``book/_build/html``);

and the build is over when this script exits (non-zero fails it). Standard library only, plus
pygments for code colours when it is there (it comes with IPython). No JavaScript in the pages:
what the reader sees is the stored notebook, outputs included; nothing is executed.

Every page is ``<slug>.html`` at the top of the build directory (``index.html`` for the intro), and
every link between pages is relative, so the site works from any URL prefix and from ``file://``.
A picture output becomes ``<figure class="output-figure"><img src="build/...svg"></figure>``, its
DOT source (the output's ``text/plain``) folded under it. ``book-manifest.json`` lists the pages
for tests: slug, file, title, source notebook, and how many pictures each has.
"""
from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import posixpath
import re
import shutil
import sys
import urllib.parse
import urllib.request
from pathlib import Path

THEME_DIR = Path(__file__).resolve().parent
PICTURE_TYPES = ("image/svg+xml", "image/png", "image/jpeg", "image/gif")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

# the content server is on localhost: never send it through a proxy from the environment
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def esc(text: str) -> str:
    return html.escape(text, quote=True)


def fetch(url: str) -> bytes:
    with _opener.open(url, timeout=60) as response:
        return response.read()


def fetch_json(url: str):
    return json.loads(fetch(url).decode("utf-8"))


class CodeColours:
    """pygments when installed (it comes with IPython), plain escaped text otherwise."""

    def __init__(self):
        try:
            import pygments
            from pygments.formatters import HtmlFormatter
            from pygments.lexers import get_lexer_by_name
        except ImportError:
            self.pygments = None
            return
        self.pygments = pygments
        self.formatter = HtmlFormatter(nowrap=True)
        self.get_lexer_by_name = get_lexer_by_name
        self.css = HtmlFormatter(style="friendly").get_style_defs(".highlight")

    def __call__(self, code: str, lang: str) -> str:
        if self.pygments is not None and lang:
            try:
                lexer = self.get_lexer_by_name(lang)
            except Exception:  # an unknown language: show it plain
                lexer = None
            if lexer is not None:
                return self.pygments.highlight(code, lexer, self.formatter)
        return esc(code)


class Site:
    """What every page needs: the CDN, the output folder, the page list, the files copied so far."""

    def __init__(self, cdn: str, out: Path):
        self.cdn = cdn.rstrip("/")
        self.out = out
        self.config = fetch_json(self.cdn + "/config.json")
        self.project = self.config["projects"][0]
        self.title = self.project.get("title") or "Book"
        self.index_slug = self.project.get("index", "index")
        self.pages = []       # (slug, title) in reading order; the intro first
        self.nav = []         # the sidebar: ("page", slug, label, level) or ("group", None, title, level)
        self.copied = {}      # public url -> the path written under out/
        self.colours = CodeColours()
        self.unknown_nodes = set()

    def content_url(self, slug: str) -> str:
        project_slug = self.project.get("slug")
        prefix = f"/content/{project_slug}" if project_slug else "/content"
        return f"{self.cdn}{prefix}/{slug}.json"

    def page_file(self, slug: str) -> str:
        return "index.html" if slug == self.index_slug else f"{slug}.html"

    def copy_public(self, url: str) -> str:
        """Copy a public file of the content server (a picture, a notebook) into build/."""
        if url not in self.copied:
            name = posixpath.basename(urllib.parse.urlsplit(url).path) or "file"
            target = self.out / "build" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(fetch(self.cdn + url if url.startswith("/") else url))
            self.copied[url] = f"build/{name}"
        return self.copied[url]

    def write_picture(self, data: bytes, extension: str) -> str:
        name = f"fig-{hashlib.sha256(data).hexdigest()[:24]}.{extension}"
        target = self.out / "build" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return f"build/{name}"

    def resolve_link(self, url: str) -> str:
        """A page link (``/scheduler#section``) becomes ``scheduler.html#section``; a public file is
        copied; anything else (http:, mailto:, #anchor) stays as it is."""
        if not url.startswith("/"):
            return url
        path, _, fragment = url.partition("#")
        slug = path.strip("/")
        project_slug = self.project.get("slug")
        if project_slug and slug.startswith(project_slug + "/"):
            slug = slug[len(project_slug) + 1:]
        slugs = {s for s, _ in self.pages}
        if slug in ("", self.index_slug) or slug in slugs:
            target = self.page_file(slug or self.index_slug)
        else:
            target = self.copy_public(path)
        return target + (f"#{fragment}" if fragment else "")


class PageRenderer:
    """MyST AST -> HTML for one page. Unknown node types render their children and are reported."""

    def __init__(self, site: Site):
        self.site = site
        self.figures = 0
        self.outline = []     # (depth, html_id, text) of the page's headings

    def children(self, node) -> str:
        return "".join(self.render(child) for child in node.get("children") or [])

    def render(self, node) -> str:
        method = getattr(self, "node_" + node["type"], None)
        if method is None:
            self.site.unknown_nodes.add(node["type"])
            return self.children(node)
        return method(node)

    # --- blocks -----------------------------------------------------------------------------
    def node_root(self, node):
        return self.children(node)

    def node_block(self, node):
        kind = node.get("kind") or ""
        cls = {"notebook-code": "cell cell-code", "notebook-content": "cell cell-markdown"}.get(kind, "block")
        anchor = f' id="{esc(node["html_id"])}"' if node.get("html_id") else ""
        return f'<div class="{cls}"{anchor}>{self.children(node)}</div>\n'

    def node_heading(self, node):
        depth = min(max(int(node.get("depth", 2)), 1), 6)
        html_id = node.get("html_id") or node.get("identifier") or ""
        inner = self.children(node)
        self.outline.append((depth, html_id, re.sub(r"<[^>]+>", "", inner)))
        anchor = f' id="{esc(html_id)}"' if html_id else ""
        link = f'<a class="anchor" href="#{esc(html_id)}" aria-label="link to this section">#</a>' if html_id else ""
        return f"<h{depth}{anchor}>{inner}{link}</h{depth}>\n"

    def node_paragraph(self, node):
        return f"<p>{self.children(node)}</p>\n"

    def node_blockquote(self, node):
        return f"<blockquote>{self.children(node)}</blockquote>\n"

    def node_thematicBreak(self, node):
        return "<hr>\n"

    def node_list(self, node):
        if node.get("ordered"):
            start = node.get("start")
            attr = f' start="{int(start)}"' if start not in (None, 1) else ""
            return f"<ol{attr}>{self.children(node)}</ol>\n"
        return f"<ul>{self.children(node)}</ul>\n"

    def node_listItem(self, node):
        return f"<li>{self.children(node)}</li>\n"

    def node_table(self, node):
        rows = node.get("children") or []
        head = [r for r in rows if all(c.get("header") for c in r.get("children") or [])]
        body = [r for r in rows if r not in head]
        thead = f"<thead>{''.join(self.render(r) for r in head)}</thead>" if head else ""
        tbody = f"<tbody>{''.join(self.render(r) for r in body)}</tbody>"
        return f'<div class="table-wrap"><table>{thead}{tbody}</table></div>\n'

    def node_tableRow(self, node):
        return f"<tr>{self.children(node)}</tr>"

    def node_tableCell(self, node):
        tag = "th" if node.get("header") else "td"
        align = node.get("align")
        style = f' style="text-align:{esc(align)}"' if align in ("left", "right", "center") else ""
        return f"<{tag}{style}>{self.children(node)}</{tag}>"

    def node_code(self, node):
        lang = (node.get("lang") or "").strip()
        body = self.site.colours(node.get("value", ""), lang)
        cls = f' class="language-{esc(lang)}"' if lang else ""
        return f'<pre class="highlight"><code{cls}>{body}</code></pre>\n'

    def node_html(self, node):
        return node.get("value", "")

    def node_comment(self, node):
        return ""

    def node_admonition(self, node):
        kind = esc(node.get("kind") or "note")
        return f'<aside class="admonition admonition-{kind}">{self.children(node)}</aside>\n'

    def node_admonitionTitle(self, node):
        return f'<p class="admonition-title">{self.children(node)}</p>'

    def node_container(self, node):
        return f"<figure>{self.children(node)}</figure>\n"

    def node_caption(self, node):
        return f"<figcaption>{self.children(node)}</figcaption>"

    def node_math(self, node):
        return f'<pre class="math">{esc(node.get("value", ""))}</pre>\n'

    # --- inline -------------------------------------------------------------------------------
    def node_text(self, node):
        return esc(node.get("value", ""))

    def node_inlineCode(self, node):
        value = esc(node.get("value", ""))
        if len(value) > 24:
            # long dotted names (brpc_mini.bthread.task_group.TaskGroup.sched_to) may wrap after a
            # dot, a slash or '::' instead of stretching a table column; <wbr> copies as nothing
            value = re.sub(r"(::|[./])(?=\w)(?!(?:h|cpp|py|proto|md|ipynb)\b)", r"\1<wbr>", value)
        return f"<code>{value}</code>"

    def node_strong(self, node):
        return f"<strong>{self.children(node)}</strong>"

    def node_emphasis(self, node):
        return f"<em>{self.children(node)}</em>"

    def node_delete(self, node):
        return f"<del>{self.children(node)}</del>"

    def node_subscript(self, node):
        return f"<sub>{self.children(node)}</sub>"

    def node_superscript(self, node):
        return f"<sup>{self.children(node)}</sup>"

    def node_break(self, node):
        return "<br>"

    def node_inlineMath(self, node):
        return f'<code class="math">{esc(node.get("value", ""))}</code>'

    def node_link(self, node):
        href = self.site.resolve_link(node.get("url", ""))
        inner = self.children(node) or esc(node.get("url", ""))
        external = href.startswith(("http://", "https://"))
        rel = ' rel="noopener"' if external else ""
        return f'<a href="{esc(href)}"{rel}>{inner}</a>'

    def node_crossReference(self, node):
        url = node.get("url") or ("#" + (node.get("html_id") or node.get("identifier") or ""))
        inner = self.children(node) or esc(node.get("label") or node.get("identifier") or "")
        return f'<a href="{esc(self.site.resolve_link(url))}">{inner}</a>'

    def node_image(self, node):
        src = self.site.resolve_link(node.get("url", ""))
        self.figures += 1
        return f'<img src="{esc(src)}" alt="{esc(node.get("alt") or "")}">'

    def node_abbreviation(self, node):
        return f'<abbr title="{esc(node.get("title") or "")}">{self.children(node)}</abbr>'

    # --- notebook outputs -----------------------------------------------------------------------
    def node_outputs(self, node):
        inner = self.children(node)
        return f'<div class="outputs">{inner}</div>\n' if inner else ""

    def node_output(self, node):
        out = node.get("jupyter_data") or {}
        kind = out.get("output_type")
        if kind == "stream":
            text = ANSI_ESCAPE.sub("", self.text_of(out.get("text", "")))
            return f'<pre class="output output-stream output-{esc(out.get("name", "stdout"))}">{esc(text)}</pre>\n'
        if kind == "error":
            text = ANSI_ESCAPE.sub("", "\n".join(out.get("traceback") or [f"{out.get('ename')}: {out.get('evalue')}"]))
            return f'<pre class="output output-error">{esc(text)}</pre>\n'
        data = out.get("data") or {}
        for mime in PICTURE_TYPES:
            if mime in data:
                return self.picture(data, mime)
        if "text/html" in data:
            return f'<div class="output output-html">{self.text_of(self.mime_content(data["text/html"]))}</div>\n'
        if "text/markdown" in data:
            return f'<pre class="output output-text">{esc(self.text_of(self.mime_content(data["text/markdown"])))}</pre>\n'
        if "text/plain" in data:
            text = ANSI_ESCAPE.sub("", self.text_of(self.mime_content(data["text/plain"])))
            return f'<pre class="output output-text">{esc(text)}</pre>\n'
        return ""

    @staticmethod
    def text_of(value) -> str:
        return "".join(value) if isinstance(value, list) else (value or "")

    def mime_content(self, entry):
        """An output's data for one mime type: inline ``content``, or a ``path`` on the server."""
        if isinstance(entry, dict):
            if "content" in entry:
                return entry["content"]
            if "path" in entry:
                return fetch(self.site.cdn + entry["path"]).decode("utf-8")
            return ""
        return entry

    def picture(self, data, mime) -> str:
        entry = data[mime]
        extension = {"image/svg+xml": "svg", "image/png": "png", "image/jpeg": "jpg", "image/gif": "gif"}[mime]
        if isinstance(entry, dict) and "path" in entry and "content" not in entry:
            src = self.site.copy_public(entry["path"])
            svg_text = (self.site.out / src).read_text("utf-8", "replace") if extension == "svg" else ""
        else:
            content = self.text_of(self.mime_content(entry))
            if extension == "svg":
                svg_text = content
                raw = content.encode("utf-8")
            else:
                svg_text = ""
                raw = base64.b64decode(content)
            src = self.site.write_picture(raw, extension)
        self.figures += 1
        title = re.search(r"<title>([^<]*)</title>", svg_text)
        alt = f"picture: {html.unescape(title.group(1))}" if title else "picture"
        source = ""
        if "text/plain" in data:
            text = self.text_of(self.mime_content(data["text/plain"]))
            # graphviz pictures carry their DOT source; a matplotlib figure only "<Figure size ...>"
            if re.match(r"\s*(strict\s+)?(di)?graph\b", text):
                source = (f'<details class="picture-source"><summary>DOT source</summary>'
                          f'<pre>{esc(text)}</pre></details>')
        return (f'<figure class="output output-figure"><img src="{esc(src)}" alt="{esc(alt)}" loading="eager">'
                f"{source}</figure>\n")


def short_title(title: str) -> str:
    """The sidebar's name for a chapter: its title up to the first ': ' (so `Channel::CallMethod`
    stays whole)."""
    return title.split(": ", 1)[0]


def render_site(cdn: str, out: Path) -> list[dict]:
    site = Site(cdn, out)
    contents = {site.index_slug: fetch_json(site.content_url(site.index_slug))}
    entries = [{"slug": site.index_slug, "level": 1}] + list(site.project.get("pages") or [])
    for entry in entries:
        slug = entry.get("slug")
        if not slug:
            site.nav.append(("group", None, entry.get("title") or "", entry.get("level", 1)))
            continue
        if slug not in contents:
            contents[slug] = fetch_json(site.content_url(slug))
        frontmatter = contents[slug].get("frontmatter") or {}
        title = frontmatter.get("title") or entry.get("title") or slug
        site.pages.append((slug, title))
        # the sidebar's name: the page's short_title, else its title up to the first ': '
        label = frontmatter.get("short_title") or entry.get("short_title") or short_title(title)
        site.nav.append(("page", slug, label, entry.get("level", 1)))

    assets = out / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(THEME_DIR / "book.css", assets / "book.css")
    (assets / "pygments.css").write_text(getattr(site.colours, "css", ""), encoding="utf-8")

    manifest = []
    for number, (slug, title) in enumerate(site.pages):
        content = contents[slug]
        renderer = PageRenderer(site)
        body = renderer.render(content["mdast"])
        frontmatter = content.get("frontmatter") or {}
        # mystmd's location is relative to the project (book/): "/index.md", "/../notebooks/x.ipynb"
        source = posixpath.normpath("book" + (content.get("location") or ""))
        page_html = page_template(site, number, slug, title, body, renderer.outline, source,
                                  content.get("kind"), frontmatter)
        (out / site.page_file(slug)).write_text(page_html, encoding="utf-8")
        manifest.append({"slug": slug, "file": site.page_file(slug), "title": title, "source": source,
                         "kind": content.get("kind"), "figures": renderer.figures})
    (out / "book-manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    if site.unknown_nodes:
        # mystmd shows our stderr: a new kind of MyST node deserves a renderer method here
        print(f"render.py: rendered these MyST node types as plain containers: "
              f"{', '.join(sorted(site.unknown_nodes))}", file=sys.stderr)
    return manifest


def page_template(site, number, slug, title, body, outline, source, kind, frontmatter) -> str:
    nav_items = []
    for item_kind, item_slug, label, level in site.nav:
        if item_kind == "group":
            nav_items.append(f'<li class="nav-group">{esc(label)}</li>')
            continue
        current = item_slug == slug
        cls = ' class="current"' if current else ""
        aria = ' aria-current="page"' if current else ""
        sub = ""
        if current:
            sections = [(hid, text) for depth, hid, text in outline if depth == 2 and hid]
            if sections:
                sub = "<ul>" + "".join(f'<li><a href="#{esc(hid)}">{esc(html.unescape(text))}</a></li>'
                                       for hid, text in sections) + "</ul>"
        nav_items.append(f'<li{cls}><a href="{esc(site.page_file(item_slug))}"{aria}>{esc(label)}</a>{sub}</li>')

    labels = {item_slug: label for item_kind, item_slug, label, _ in site.nav if item_kind == "page"}
    prev_link = next_link = ""
    if number > 0:
        prev_slug = site.pages[number - 1][0]
        prev_link = (f'<a class="prev" href="{esc(site.page_file(prev_slug))}">'
                     f'<span>Previous</span>{esc(labels[prev_slug])}</a>')
    if number + 1 < len(site.pages):
        next_slug = site.pages[number + 1][0]
        next_link = (f'<a class="next" href="{esc(site.page_file(next_slug))}">'
                     f'<span>Next</span>{esc(labels[next_slug])}</a>')

    source_line = ""
    if kind == "Notebook":
        downloads = [e for e in frontmatter.get("exports") or [] if e.get("format") == "ipynb" and e.get("url")]
        download = ""
        if downloads:
            href = site.copy_public(downloads[0]["url"])
            name = downloads[0].get("filename") or posixpath.basename(source)
            download = f' · <a href="{esc(href)}" download="{esc(name)}">download the notebook</a>'
        source_line = (f'<p class="source">The notebook <code>{esc(source)}</code> with its stored outputs; '
                       f"run it with <code>./kit lab</code>{download}.</p>")

    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} · {esc(site.title)}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="assets/book.css">
<link rel="stylesheet" href="assets/pygments.css">
</head>
<body>
<nav class="sidebar" aria-label="Chapters">
<a class="book-title" href="index.html">{esc(site.title)}</a>
<ul class="toc">
{chr(10).join(nav_items)}
</ul>
</nav>
<main>
<article class="page page-{esc((kind or 'article').lower())}">
<h1 class="page-title">{esc(title)}</h1>
{source_line}
{body}
</article>
<nav class="pager" aria-label="Previous and next">{prev_link}{next_link}</nav>
<footer>Built with Jupyter Book 2 (mystmd) and the brpc_mini book theme, from the stored notebooks.</footer>
</main>
</body>
</html>
"""


def main() -> int:
    cdn = os.environ.get("CONTENT_CDN")
    out = os.environ.get("BUILD_DIRECTORY")
    if not cdn or not out:
        print("render.py runs inside `jupyter book build --html` (it needs CONTENT_CDN and "
              "BUILD_DIRECTORY); build the book with ./kit book", file=sys.stderr)
        return 2
    render_site(cdn, Path(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
