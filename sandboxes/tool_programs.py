"""The programs behind glob, grep and web_fetch: Python 3 (the sandbox image has it) run inside the
sandbox by the persistent shell, as `python3 -c PROGRAM ARGS`, where ARGS is the call's input as
base64 JSON. Each says what went wrong in its own words (`grep: …`) and exits 1; finding nothing is
not an error. Only the standard library: the image has nothing else."""

from __future__ import annotations

# Shared by glob and grep: `{a,b}` alternatives expanded (fnmatch and glob lack them).
_BRACES = r"""
def braces(p):
    m = re.search(r"\{([^{}]*,[^{}]*)\}", p)
    if not m:
        return [p]
    return [x for alt in m.group(1).split(",") for x in braces(p[:m.start()] + alt + p[m.end():])]
"""

GLOB_PY = (
    r"""
import base64, glob, json, os, re, sys
a = json.loads(base64.b64decode(sys.argv[1]))
root, pattern, cap = a["root"], a["pattern"], a["cap"]
"""
    + _BRACES
    + r"""
if not os.path.exists(root):
    sys.exit(f"glob: no such directory: {root}")
if not os.path.isdir(root):
    sys.exit(f"glob: {root} is not a directory")
found = set()
for p in braces(pattern):
    if os.path.isabs(p):
        found.update(glob.glob(p, recursive=True, include_hidden=True))
    else:
        found.update(os.path.join(root, m) for m in glob.glob(p, root_dir=root, recursive=True, include_hidden=True))
paths = sorted(os.path.normpath(p) + ("/" if os.path.isdir(p) else "") for p in found)
if not paths:
    print(f"No files match {pattern} in {root}.")
for p in paths[:cap]:
    print(p)
if len(paths) > cap:
    print(f"[{len(paths) - cap} more paths not shown (the first {cap} of {len(paths)}); narrow the pattern]")
"""
)

# File types as ripgrep names them (the common ones).
GREP_PY = (
    r"""
import base64, fnmatch, json, os, re, sys
a = json.loads(base64.b64decode(sys.argv[1]))
TYPES = {
    "py": "*.py *.pyi", "python": "*.py *.pyi", "js": "*.js *.mjs *.cjs *.jsx", "ts": "*.ts *.tsx *.mts *.cts",
    "typescript": "*.ts *.tsx", "go": "*.go", "rust": "*.rs", "rs": "*.rs", "java": "*.java", "kotlin": "*.kt *.kts",
    "c": "*.c *.h", "cpp": "*.cpp *.cc *.cxx *.hpp *.hh *.hxx *.h", "cs": "*.cs", "rb": "*.rb", "ruby": "*.rb",
    "php": "*.php", "swift": "*.swift", "scala": "*.scala", "sh": "*.sh *.bash *.zsh", "md": "*.md *.markdown",
    "markdown": "*.md *.markdown", "json": "*.json", "yaml": "*.yaml *.yml", "yml": "*.yaml *.yml",
    "toml": "*.toml", "ini": "*.ini *.cfg", "html": "*.html *.htm", "css": "*.css *.scss *.sass *.less",
    "xml": "*.xml", "sql": "*.sql", "txt": "*.txt", "rst": "*.rst", "csv": "*.csv", "lua": "*.lua",
    "make": "Makefile makefile GNUmakefile *.mk", "docker": "Dockerfile *.dockerfile",
}
MAX_FILE = 20 * 2**20  # larger files are skipped (named at the end)
LINE = 500  # characters of a line shown at most
"""
    + _BRACES
    + r"""
flags = re.MULTILINE | (re.IGNORECASE if a["case_insensitive"] else 0) | (re.DOTALL if a["multiline"] else 0)
try:
    rx = re.compile(a["pattern"], flags)
except re.error as e:
    sys.exit(f"grep: invalid regular expression {a['pattern']!r}: {e}")
root = a["root"]
if not os.path.exists(root):
    sys.exit(f"grep: no such file or directory: {root}")
kinds = None
if a["type"]:
    if a["type"] not in TYPES:
        sys.exit(f"grep: unknown file type {a['type']!r} (known: {', '.join(sorted(TYPES))}); or use glob")
    kinds = TYPES[a["type"]].split()
globs = [g for p in braces(a["glob"]) for g in (p, p[3:] if p.startswith("**/") else p)] if a["glob"] else None


def wanted(path):
    rel, name = os.path.relpath(path, root), os.path.basename(path)
    if kinds is not None and not any(fnmatch.fnmatchcase(name, k) for k in kinds):
        return False
    return globs is None or any(fnmatch.fnmatchcase(rel if "/" in g else name, g) for g in globs)


def files():
    if os.path.isfile(root):
        yield root
        return
    for d, dirs, names in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x != ".git")
        for n in sorted(names):
            p = os.path.join(d, n)
            if os.path.isfile(p) and wanted(p):
                yield p


def short(line):
    return line if len(line) <= LINE else line[:LINE] + f"…[{len(line) - LINE} more characters]"


mode, limit = a["output_mode"], a["limit"]
before = a["before"] if a["before"] is not None else (a["context"] or 0)
after = a["after"] if a["after"] is not None else (a["context"] or 0)
out, more, skipped, searched = [], 0, [], 0
for path in files():
    try:
        if os.path.getsize(path) > MAX_FILE:
            skipped.append(path)
            continue
        data = open(path, "rb").read()
    except OSError:
        continue
    if b"\0" in data[:8192]:
        continue  # binary
    searched += 1
    text = data.decode("utf-8", errors="replace")
    if mode == "files_with_matches":
        if rx.search(text):
            out.append(path)
        continue
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    hit = set()
    if a["multiline"]:
        import bisect
        for m in rx.finditer(text):
            first = bisect.bisect_right(starts, m.start()) - 1
            last = bisect.bisect_right(starts, max(m.start(), m.end() - 1)) - 1
            hit.update(range(first, min(last, len(lines) - 1) + 1))
    else:
        hit = {i for i, line in enumerate(lines) if rx.search(line)}
    if not hit:
        continue
    if mode == "count":
        out.append(f"{path}:{len(hit)}")
        continue
    show = sorted({j for i in hit for j in range(max(0, i - before), min(len(lines), i + after + 1))})
    previous = None
    for i in show:
        if previous is not None and i != previous + 1 and (before or after):
            out.append("--")
        sep = ":" if i in hit else "-"
        number = f"{i + 1}{sep}" if a["line_numbers"] else ""
        out.append(f"{path}{sep}{number}{short(lines[i])}")
        previous = i
    if before or after:
        out.append("--")
while out and out[-1] == "--":
    out.pop()
if not out:
    print(f"No matches for {a['pattern']!r} in {root} ({searched} file(s) searched).")
shown = out[:limit]
if shown and shown[-1] == "--":
    shown.pop()
if shown:
    print("\n".join(shown))
if len(out) > limit:
    what = {"content": "lines", "files_with_matches": "files", "count": "files"}[mode]
    print(f"[{len(out) - limit} more {what} not shown (limit {limit}); narrow the search or raise head_limit]")
if skipped:
    print(f"[{len(skipped)} file(s) over {MAX_FILE // 2**20} MB not searched: {', '.join(skipped[:5])}]")
"""
)

WEB_FETCH_PY = r"""
import base64, html.parser, json, os, re, sys, urllib.error, urllib.parse, urllib.request
a = json.loads(base64.b64decode(sys.argv[1]))
url, limit, timeout = a["url"], a["max_chars"], a["timeout"]
MAX = 10 * 2**20
# Through the egress proxy a sandbox speaks plain HTTP: the proxy reaches the host over its rule's
# scheme (https by default) and refuses tunnels. With an unrestricted network, the URL as it is.
proxied = bool(os.environ.get("HTTP_PROXY"))
BLOCK = {"p", "div", "br", "li", "tr", "section", "article", "header", "footer", "nav", "main", "aside",
         "blockquote", "pre", "table", "ul", "ol", "dl", "dt", "dd", "figure", "figcaption", "form",
         "h1", "h2", "h3", "h4", "h5", "h6", "hr", "title"}
SKIP = {"script", "style", "noscript", "svg", "template", "iframe", "head"}


class Text(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts, self.skip, self.pre, self.href, self.title = [], 0, 0, None, ""
        self.in_title = False

    def handle_starttag(self, tag, attrs):
        if tag == "title":
            self.in_title = True
        if tag in SKIP:
            self.skip += 1
        if tag in BLOCK:
            self.parts.append("\n")
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self.parts.append("#" * int(tag[1]) + " ")
        if tag == "li":
            self.parts.append("- ")
        if tag == "pre":
            self.pre += 1
        if tag == "a":
            self.href = dict(attrs).get("href")
        if tag == "img" and dict(attrs).get("alt"):
            self.parts.append(f"[image: {dict(attrs)['alt']}]")

    def handle_endtag(self, tag):
        if tag == "title":
            self.in_title = False
        if tag in SKIP and self.skip:
            self.skip -= 1
        if tag == "pre" and self.pre:
            self.pre -= 1
        if tag == "a" and self.href and not self.href.startswith(("#", "javascript:")):
            self.parts.append(f" ({urllib.parse.urljoin(url, self.href)})")
            self.href = None
        if tag in BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if self.in_title:
            self.title += data
        if self.skip:
            return
        self.parts.append(data if self.pre else re.sub(r"\s+", " ", data))

    def text(self):
        lines = [line.strip() if not self.pre else line for line in "".join(self.parts).split("\n")]
        body = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
        title = re.sub(r"\s+", " ", self.title).strip()
        return (f"# {title}\n\n" if title and not body.startswith(f"# {title}") else "") + body


class NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # followed below, each hop checked like the first


opener = urllib.request.build_opener(NoRedirects)
for hop in range(6):
    target = "http://" + url[len("https://"):] if proxied and url.startswith("https://") else url
    request = urllib.request.Request(target, headers={
        "User-Agent": "durable-agents-web-fetch/1.0",
        "Accept": "text/html,application/xhtml+xml,text/plain,application/json;q=0.9,*/*;q=0.5",
    })
    try:
        response = opener.open(request, timeout=timeout)
        status, headers, body = response.status, response.headers, response.read(MAX)
    except urllib.error.HTTPError as e:
        status, headers, body = e.code, e.headers, e.read(MAX)
    except (urllib.error.URLError, OSError) as e:
        sys.exit(f"web_fetch: cannot reach {url}: {getattr(e, 'reason', e)}")
    location = headers.get("Location")
    if status in (301, 302, 303, 307, 308) and location and hop < 5:
        url = urllib.parse.urljoin(url, location)
        continue
    break
ctype = headers.get("Content-Type", "")
charset = re.search(r"charset=([\w.-]+)", ctype)
try:
    text = body.decode(charset.group(1) if charset else "utf-8", errors="replace")
except LookupError:
    text = body.decode("utf-8", errors="replace")
if status == 403 and text.startswith("egress proxy:"):
    sys.exit(f"web_fetch: {url} was refused by this sandbox's egress proxy: {text[len('egress proxy:'):].strip()}")
if status >= 400:
    sys.exit(f"web_fetch: {url} answered HTTP {status}" + (f":\n{text[:2000]}" if text.strip() else ""))
kind = ctype.split(";")[0].strip().lower()
looks_html = "html" in kind or (not kind and re.match(r"\s*<(!doctype html|html)", text[:200], re.I))
if kind and not looks_html and not (kind.startswith("text/") or kind.endswith(("json", "xml", "javascript"))):
    sys.exit(f"web_fetch: {url} is {kind} ({len(body)} bytes), not text; download it with bash if the "
             "environment allows the host")
if looks_html:
    parser = Text()
    parser.feed(text)
    parser.close()
    text = parser.text()
cut = ""
if limit and len(text) > limit:
    cut = f"\n[{len(text) - limit} more characters not shown (max_chars {limit})]"
    text = text[:limit]
print(f"{url}\nHTTP {status} {kind or 'unknown type'}\n\n{text}{cut}")
"""
