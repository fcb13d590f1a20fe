"""Reads the code cells of the seed tutorial (../shared/seed/tutorial.md, a notebook
converted to Markdown) and applies the acceptance test's changes, at run time.

Nothing of the tutorial is copied into the project: cells are found by their ``In [..]:``
markers, each cell's code is the longest run of lines after its marker that parses as
Python (what follows is the recorded output and the prose), and every change is located by
parsing the code, never by matching the tutorial's text.
"""

import ast
import os
import re

MARKER = re.compile(r"^In \[[^\]]*\]:\s*$")
HEADING = re.compile(r"^#{2,6} ")
MAGIC = re.compile(r"^\s*[%!]")


def seed_path(repo_root):
    return os.path.normpath(os.path.join(repo_root, "..", "shared", "seed", "tutorial.md"))


def _masked(source):
    """IPython magics (``%pip ...``) as ``pass`` so the cell parses."""
    return "\n".join(("pass" if MAGIC.match(line) else line) for line in source.split("\n"))


def _code_prefix(block):
    for n in range(len(block), 0, -1):
        source = "\n".join(block[:n]).rstrip()
        if not source.strip():
            continue
        try:
            ast.parse(_masked(source))
        except SyntaxError:
            continue
        return source + "\n"
    return ""


def code_cells(text):
    """The code of every cell, in order."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if MARKER.match(line)]
    cells = []
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(lines)
        block = lines[start + 1:end]
        for j, line in enumerate(block):
            if HEADING.match(line):
                block = block[:j]
                break
        cells.append(_code_prefix(block))
    return cells


def is_magic_only(source):
    body = [line for line in source.splitlines() if line.strip() and not line.strip().startswith("#")]
    return bool(body) and all(MAGIC.match(line) for line in body)


# The changes ---------------------------------------------------------------------------------

IMPORT_FLUID = re.compile(r"^(\s*)import fluid\s*$", re.M)
FROM_FLUID = re.compile(r"^(\s*)from fluid((?:\.\w+)*) import ", re.M)


def rewrite_fluid_imports(source):
    """``import fluid`` -> ``from trellis import fluid``; ``from fluid[.x] import`` ->
    ``from trellis.fluid[.x] import``. Returns (source, number of lines changed)."""
    source, a = IMPORT_FLUID.subn(r"\1from trellis import fluid", source)
    source, b = FROM_FLUID.subn(r"\1from trellis.fluid\2 import ", source)
    return source, a + b


def _imports(stmt, module):
    if isinstance(stmt, ast.Import):
        return any(a.name.split(".")[0] == module for a in stmt.names)
    if isinstance(stmt, ast.ImportFrom):
        return (stmt.module or "").split(".")[0] == module
    return False


def is_credentials_cell(source):
    """A cell that only imports os and sets OSS_* environment variables."""
    tree = ast.parse(source)
    if not tree.body:
        return False
    for stmt in tree.body:
        if _imports(stmt, "os"):
            continue
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Subscript):
            key = stmt.targets[0].slice
            if isinstance(key, ast.Constant) and isinstance(key.value, str) and key.value.startswith("OSS_"):
                continue
        return False
    return True


def replace_upload(source, pvc_dir):
    """The statements from ``import oss2`` on (the object-store upload) become writing the
    pickle into ``pvc_dir``. Returns (source, object key) or (source, None) when the cell
    has no upload."""
    tree = ast.parse(source)
    first = next((i for i, s in enumerate(tree.body) if _imports(s, "oss2")), None)
    if first is None:
        return source, None
    removed = tree.body[first:]
    frame = key = None
    for stmt in removed:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr == "to_pickle" and isinstance(node.func.value, ast.Name):
                    frame = node.func.value.id
                if node.func.attr == "put_object" and node.args and isinstance(node.args[0], ast.Constant):
                    key = node.args[0].value
    if frame is None or key is None:
        raise AssertionError("the upload no longer pickles a frame into put_object(KEY, ...)")
    kept = source.splitlines()[:removed[0].lineno - 1]
    replacement = [
        "# acceptance test: the object-store upload, replaced by writing the pickle into the",
        "# directory that stands for the PersistentVolumeClaim",
        "import os as _trellis_test_os",
        "%s.to_pickle(_trellis_test_os.path.join(%r, %r))" % (frame, pvc_dir, key),
    ]
    return "\n".join(kept + replacement) + "\n", key


def reduce_rows(source, rows):
    """``num_rows = <expr>`` -> ``num_rows = rows``. Returns (source, changed?)."""
    tree = ast.parse(source)
    lines = source.splitlines()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "num_rows" for t in node.targets):
            v = node.value
            assert v.lineno == v.end_lineno, "num_rows spans several lines"
            line = lines[v.lineno - 1]
            lines[v.lineno - 1] = line[:v.col_offset] + str(int(rows)) + line[v.end_col_offset:]
            return "\n".join(lines) + "\n", True
    return source, False


# Facts read from the cells -------------------------------------------------------------------

def _keywords(sources, name):
    out = []
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.keyword) and node.arg == name and isinstance(node.value, ast.Constant):
                out.append(node.value.value)
    return out


def claim_names(sources):
    return sorted(set(_keywords(sources, "claim_name")))


def mount_paths(sources):
    return sorted(set(_keywords(sources, "mount_path")))


def run_ids(sources):
    return _keywords(sources, "run_id")


def count_calls(sources, attr):
    n = 0
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == attr:
                n += 1
    return n


def opened_files(sources, prefix):
    """String literals under ``prefix`` opened with ``open(...)`` in the cells."""
    out = []
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open" and node.args:
                a = node.args[0]
                if isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value.startswith(prefix + "/"):
                    out.append(a.value)
    return out
