"""`make install DESTDIR=` from the build tree: the programs (which run
from there), the configuration files under $(sysconfdir)/kettle, the units
with the install paths substituted, the manual pages, the headers, the
library and kettle.pc (a program builds and runs against them). A second
install keeps a configuration file the administrator changed; uninstall
removes everything else and keeps that file.

Skipped (77) when the build tree has no Makefile or make is missing."""
import filecmp
import os
import re
import shutil
import subprocess
import sys
import tempfile

import harness as h

PROGRAMS = ["kettled", "kettle-db", "kettle-bench", "kettle-cli"]
CONFS = ["kettled.conf", "kettle-db.conf", "haproxy-kettled.cfg", "prometheus-kettle.yml",
         "prometheus-kettle-rules.yml"]
UNITS = ["kettled.service", "kettled.socket", "kettle-db.service", "kettled@.service",
         "kettled.target"]
MANS = ["man8/kettled.8", "man8/kettle-db.8", "man1/kettle-bench.1", "man1/kettle-cli.1",
        "man5/kettled.conf.5", "man3/libkettle.3"]

PROBE = r"""
#include <stdio.h>
#include <kettle/kettle.h>
int main(void)
{
    kt_loop *loop;
    int r = kt_loop_new(&loop, NULL);
    if (r < 0)
        return 1;
    printf("backend %s\n", kt_loop_backend(loop));
    kt_loop_free(loop);
    return 0;
}
"""


def make(*args):
    env = dict(os.environ)
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"):
        env.pop(k, None)  # an independent make, not a part of the running one
    r = subprocess.run([MAKE, "-C", h.BUILDDIR] + list(args), capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, "make %s failed:\n%s%s" % (" ".join(args), r.stdout[-3000:],
                                                         r.stderr[-3000:])
    return r.stdout + r.stderr


def find(root, suffix):
    """The one installed file whose path ends with suffix."""
    hits = []
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            if p.endswith("/" + suffix):
                hits.append(p)
    assert len(hits) == 1, "%s: %s" % (suffix, hits or "not installed")
    return hits[0]


def check_tree(dest):
    bins = {p: find(dest, "bin/" + p) for p in PROGRAMS}
    libdir = os.path.dirname(find(dest, "libkettle.so.0"))
    env = dict(os.environ, LD_LIBRARY_PATH=libdir)
    for p, path in bins.items():
        assert os.access(path, os.X_OK), path
        out = subprocess.run([path, "--version"], capture_output=True, text=True, env=env,
                             timeout=30)
        assert out.returncode == 0 and p in out.stdout, (path, out.stdout, out.stderr)

    confdir = os.path.dirname(find(dest, "kettle/kettled.conf"))
    for c in CONFS:
        src = os.path.join(h.SRCDIR, "conf", c)
        assert filecmp.cmp(src, os.path.join(confdir, c), shallow=False), c

    bindir = os.path.dirname(bins["kettled"])[len(dest):]
    etc = confdir[len(dest):]
    for u in UNITS:
        text = open(find(dest, "system/" + u)).read()
        assert not re.search(r"@[a-z_]+@", text), u + ": unsubstituted @...@"
        for m in re.findall(r"^ExecStart=(\S+)(.*)$", text, re.M):
            assert m[0].startswith(bindir + "/"), (u, m, bindir)
            assert etc + "/" in m[1], (u, m, etc)

    for m in MANS:
        find(dest, "man/" + m)

    incdir = os.path.dirname(find(dest, "include/kettle/kettle.h"))
    srcinc = os.path.join(h.SRCDIR, "include", "kettle")
    for hdr in os.listdir(srcinc):
        assert filecmp.cmp(os.path.join(srcinc, hdr), os.path.join(incdir, hdr),
                           shallow=False), hdr
    find(dest, "libkettle.so")
    return libdir


def check_pkgconfig(dest, libdir):
    """Build a program against the installed headers and library, found
    through the installed kettle.pc, and run it."""
    pc = h.need("pkg-config")
    cc = shutil.which(os.environ.get("CC", "cc")) or h.need("cc")
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(libdir, "pkgconfig"),
               PKG_CONFIG_LIBDIR=os.path.join(libdir, "pkgconfig"), PKG_CONFIG_SYSROOT_DIR=dest)
    flags = subprocess.run([pc, "--cflags", "--libs", "kettle"], capture_output=True, text=True,
                           env=env, timeout=30)
    assert flags.returncode == 0, flags.stderr
    assert dest in flags.stdout, flags.stdout
    extra = []
    with open(os.path.join(h.BUILDDIR, "config.h")) as f:
        if re.search(r"^#define KT_SANITIZED 1", f.read(), re.M):
            extra = ["-fsanitize=address,undefined"]  # the library needs the runtime
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(PROBE)
        exe = os.path.join(tmp, "probe")
        r = subprocess.run([cc, "-std=gnu11", src, "-o", exe] + extra + flags.stdout.split(),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        r = subprocess.run([exe], capture_output=True, text=True, timeout=30,
                           env=dict(os.environ, LD_LIBRARY_PATH=libdir))
        assert r.returncode == 0 and r.stdout.startswith("backend "), (r.stdout, r.stderr)


def test_install_tree():
    with tempfile.TemporaryDirectory(prefix="kettle-inst-") as dest:
        make("install", "DESTDIR=" + dest)
        libdir = check_tree(dest)
        check_pkgconfig(dest, libdir)

        # the administrator edits one file; a new install keeps it
        conf = find(dest, "kettle/kettled.conf")
        with open(conf, "a") as f:
            f.write("\n# changed here\nmaxclients = 100\n")
        out = make("install", "DESTDIR=" + dest)
        assert "maxclients = 100" in open(conf).read(), "install overwrote an existing conf"
        assert re.search(r"keeping \S*kettled\.conf", out), out[-2000:]

        # uninstall removes what was installed as shipped, keeps the edit
        make("uninstall", "DESTDIR=" + dest)
        left = [os.path.relpath(os.path.join(d, f), dest)
                for d, _, fs in os.walk(dest) for f in fs]
        assert left == [os.path.relpath(conf, dest)], left


MAKE = shutil.which("make")
if MAKE is None or not os.path.exists(os.path.join(h.BUILDDIR, "Makefile")):
    print("SKIP: no make, or no Makefile in %s" % h.BUILDDIR)
    sys.exit(77)
h.main(globals())
