#!/usr/bin/env python3
"""test-exports.py - libkettle.so exports its public API and nothing else.

Every symbol the shared library defines for the dynamic linker must be a
function or object declared in the public headers (include/kettle/*.h),
and everything declared there must be exported: no kt__ (library-private) name,
no helper of a backend, no symbol of a linked library leaks out, and no
public declaration is left without its definition.

KETTLE_BUILDDIR and KETTLE_SRCDIR name the trees (make check sets them).
"""
import glob
import os
import re
import shutil
import subprocess
import sys

build = os.environ.get("KETTLE_BUILDDIR", ".")
src = os.environ.get("KETTLE_SRCDIR", "..")
so = os.path.join(build, ".libs", "libkettle.so")
if not os.path.exists(so):
    print("test-exports: %s not built" % so)
    sys.exit(99)
if shutil.which("nm") is None:
    print("test-exports: nm not found")
    sys.exit(99)


def declared_names():
    """Names of the functions and extern objects the public headers
    declare (not the static inline functions, which are not exported, nor
    macros)."""
    names = set()
    for path in sorted(glob.glob(os.path.join(src, "include", "kettle", "*.h"))):
        with open(path) as f:
            text = f.read()
        text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
        text = re.sub(r"//[^\n]*", " ", text)
        # static inline definitions: drop the whole definition
        text = re.sub(r"static\s+inline[^{;]*\{[^}]*\}", " ", text)
        for m in re.finditer(r"\bextern\b[^;(){}]*?\b(kt_[a-z0-9_]+)\s*;", text):
            names.add(m.group(1))
        for line in text.split("\n"):
            if line.lstrip().startswith("#"):
                continue
            # a declaration: a name followed by "(" that is not a call
            # inside a definition (there are none left) nor a function
            # pointer typedef "(*name)("
            for m in re.finditer(r"(?<![\w])(?<!\(\*)(kt_[a-z0-9_]+)\s*\(", line):
                names.add(m.group(1))
    return names


def exported_symbols():
    out = subprocess.run(["nm", "-D", "--defined-only", so], check=True,
                         capture_output=True, text=True).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            names.add(parts[2].split("@")[0])
    return names


declared = declared_names()
exported = exported_symbols()
problems = []
for name in sorted(exported - declared):
    problems.append("exported but not declared in include/kettle: %s" % name)
for name in sorted(declared - exported):
    problems.append("declared in include/kettle but not exported: %s" % name)
if len(declared) < 50:
    problems.append("only %d declarations found: the header scan is broken" % len(declared))
for p in problems:
    print(p)
print("%d exported, %d declared, %d problems" % (len(exported), len(declared), len(problems)))
sys.exit(1 if problems else 0)
