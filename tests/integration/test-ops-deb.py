"""The Debian packages, as a user gets them: `dpkg-buildpackage -us -uc -b`
in a copy of the checkout builds kettle, libkettle0 and libkettle-dev with
the expected files (conffiles in /etc/kettle, units, manual pages, the
library, the headers and kettle.pc); lintian finds no error (its warnings
are printed). Installed without a running systemd, the package puts the
units in place and enables kettled.service; /usr/bin/kettled --version
answers, kettle-db and kettled run from the installed files and their
installed configuration and serve a GET, a program builds against
libkettle-dev. Purging removes every installed file, the configuration
and the enablement links, and leaves no kettle process running.

Installing needs root (skipped otherwise). The install, check and purge
hold a lock so that two suites on one machine take turns; whatever
happens, the packages this test installed are purged before it returns,
and one left behind by a killed run is purged by the next. A machine
where kettle was installed by other means is left alone (skipped)."""
import fcntl
import os
import re
import shutil
import subprocess
import tempfile
import time

import harness as h

PKGS = ["kettle", "libkettle0", "libkettle-dev"]
PROGRAMS = ["kettled", "kettle-db", "kettle-bench", "kettle-cli"]
UNITS = ["kettled.service", "kettled.socket", "kettled@.service", "kettled.target",
         "kettle-db.service"]
CONFFILES = ["/etc/kettle/" + f for f in ("kettled.conf", "kettle-db.conf", "haproxy-kettled.cfg",
                                           "prometheus-kettle.yml", "prometheus-kettle-rules.yml")]
LOCK = "/run/lock/kettle-test-deb.lock"
MARK = "/var/lib/kettle-test-deb.installed"  # this test's install is on the machine
ENV = dict(os.environ, DEBIAN_FRONTEND="noninteractive", DEB_BUILD_PROFILES="nocheck",
           DEB_BUILD_OPTIONS="nocheck noautodbgsym parallel=2")
for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"):
    ENV.pop(k, None)  # an independent build, not part of the running make
NICE = ["nice", "-n", "19"]

PROBE = r"""
#include <stdio.h>
#include <kettle/kettle.h>
int main(void)
{
    kt_loop *loop;
    if (kt_loop_new(&loop, NULL) < 0)
        return 1;
    printf("backend %s\n", kt_loop_backend(loop));
    kt_loop_free(loop);
    return 0;
}
"""


def run(argv, timeout=600, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=timeout, **kw)
    assert r.returncode == 0, "%s failed (%d):\n%s\n%s" % (" ".join(argv), r.returncode,
                                                           r.stdout[-4000:], r.stderr[-4000:])
    return r.stdout


def copy_checkout(dst):
    """The files a checkout has: git's list where the source is a git work
    tree (tracked and untracked, less what is ignored), else the tree less
    build directories."""
    git = shutil.which("git")
    if git and subprocess.run([git, "-C", h.SRCDIR, "rev-parse"], capture_output=True).returncode == 0:
        out = subprocess.run([git, "-C", h.SRCDIR, "ls-files", "-co", "--exclude-standard", "-z"],
                             capture_output=True, check=True).stdout.decode()
        for rel in filter(None, out.split("\0")):
            src = os.path.join(h.SRCDIR, rel)
            if os.path.isfile(src):
                os.makedirs(os.path.join(dst, os.path.dirname(rel)), exist_ok=True)
                shutil.copy2(src, os.path.join(dst, rel))
    else:
        skip = re.compile(r"^(build.*|autom4te\.cache|\.git|__pycache__)$")
        shutil.copytree(h.SRCDIR, dst, symlinks=True, dirs_exist_ok=True,
                        ignore=lambda d, names: [n for n in names if skip.match(n)])
        shutil.rmtree(os.path.join(dst, "debian", "build"), ignore_errors=True)


def installed(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return r.returncode == 0 and "installed" in r.stdout.split()[-1:]


def known(pkg):
    """Installed, or removed with its configuration left."""
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return r.returncode == 0 and r.stdout.split()[-1:] != ["not-installed"]


def purge():
    pkgs = [p for p in PKGS if known(p)]
    if pkgs:
        run(["apt-get", "purge", "-y", "-q", "-o", "DPkg::Lock::Timeout=300"] + pkgs)
    if os.path.exists(MARK):
        os.unlink(MARK)


def deb_files(deb):
    out = run(["dpkg-deb", "-c", deb])
    return {line.split()[5].lstrip(".") for line in out.splitlines() if not line.endswith("/")}


def check_debs(outdir):
    debs = {p: os.path.join(outdir, "%s_%s_%s.deb" % (p, VERSION, ARCH)) for p in PKGS}
    for p, deb in debs.items():
        assert os.path.exists(deb), "%s not built: %s" % (deb, os.listdir(outdir))
    files = {p: deb_files(d) for p, d in debs.items()}
    k = files["kettle"]
    for prog in PROGRAMS:
        assert "/usr/bin/" + prog in k, prog
    for u in UNITS:
        assert "/lib/systemd/system/" + u in k, u
    for c in CONFFILES:
        assert c in k, c
    for m in ("man8/kettled.8.gz", "man8/kettle-db.8.gz", "man5/kettled.conf.5.gz",
              "man1/kettle-bench.1.gz", "man1/kettle-cli.1.gz"):
        assert "/usr/share/man/" + m in k, m
    assert not any("libkettle" in f for f in k)
    lib = files["libkettle0"]
    assert any(re.search(r"/usr/lib/[^/]+/libkettle\.so\.0\.\d+\.\d+$", f) for f in lib), lib
    dev = files["libkettle-dev"]
    for f in ("/usr/include/kettle/kettle.h", "/usr/share/man/man3/libkettle.3.gz"):
        assert f in dev, f
    assert any(f.endswith("/pkgconfig/kettle.pc") for f in dev), dev
    assert not any(f.endswith(".la") for f in set().union(*files.values()))
    conffiles = run(["dpkg-deb", "--info", debs["kettle"], "conffiles"]).split()
    assert sorted(conffiles) == sorted(CONFFILES), conffiles
    return debs


def wait_lock():
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o644)

    def take():
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
    h.wait_for(take, 900, "the package-test lock (another suite installs kettle)", 0.5)
    return fd


def kettle_processes():
    """PIDs running a kettle program from /usr/bin."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            exe = os.readlink("/proc/%s/exe" % pid)
        except OSError:
            continue
        if re.match(r"/usr/bin/kettle(d|-db|-bench|-cli)( \(deleted\))?$", exe):
            pids.append(int(pid))
    return pids


def check_installed():
    for p in PKGS:
        assert installed(p), p + " not installed"
    for prog in PROGRAMS:
        assert os.access("/usr/bin/" + prog, os.X_OK), prog
    for u in UNITS:
        text = open("/lib/systemd/system/" + u).read()
        for exe, args in re.findall(r"^ExecStart=(\S+)(.*)$", text, re.M):
            assert exe == "/usr/bin/" + u.split("@")[0].split(".")[0], (u, exe)
            assert "/etc/kettle/" in args, (u, args)
    # enabled by deb-systemd-helper, no systemd needed
    assert os.path.islink("/etc/systemd/system/multi-user.target.wants/kettled.service")
    out = run(["/usr/bin/kettled", "--version"])
    assert "kettled" in out and VERSION in out, out

    sa = shutil.which("systemd-analyze")
    if sa:
        r = subprocess.run([sa, "verify", "--man=no"] + ["/lib/systemd/system/" + u for u in UNITS]
                           + ["kettled@1.service"], capture_output=True, text=True, timeout=120)
        findings = [l for l in (r.stdout + r.stderr).splitlines() if "kettle" in l]
        assert not findings, "\n".join(findings)

    # the daemons from the installed files, with the installed configuration
    db = h.Server("/usr/bin/kettle-db", "-c", "/etc/kettle/kettle-db.conf", "--latency", "fixed 1ms")
    kd = h.Server("/usr/bin/kettled", "-c", "/etc/kettle/kettled.conf", "--backend", db.addr)
    for p in (db, kd):
        assert os.readlink("/proc/%d/exe" % p.pid).startswith("/usr/bin/kettle")
        with open("/proc/%d/maps" % p.pid) as f:
            assert re.search(r" /usr/lib/[^/ ]+/libkettle\.so\.0", f.read()), "not the installed libkettle"
    with h.Client(kd.port) as c:
        assert c.call("GET", 7) == b"7"
        assert c.call("MGET", 1, 2, 3) == [b"1", b"2", b"3"]
    kd.stop()
    db.stop()

    # a program built against libkettle-dev through kettle.pc
    with tempfile.TemporaryDirectory(prefix="kettle-deb-probe-") as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(PROBE)
        flags = run(["pkg-config", "--cflags", "--libs", "kettle"]).split()
        run([shutil.which(os.environ.get("CC", "cc")) or "cc", "-std=gnu11", src, "-o",
             os.path.join(tmp, "probe")] + flags)
        assert run([os.path.join(tmp, "probe")]).startswith("backend ")


def check_purged(listed):
    for p in PKGS:
        assert not known(p), p + " still known to dpkg"
    left = [f for f in listed if os.path.lexists(f) and not os.path.isdir(f)]
    assert not left, "left after purge: %s" % left
    assert not os.path.exists("/etc/kettle"), os.listdir("/etc/kettle")
    links = [os.path.join(d, f) for d, _, fs in os.walk("/etc/systemd/system") for f in fs
             if f.startswith("kettle")]
    assert not links, links
    state = "/var/lib/systemd/deb-systemd-helper-enabled"
    if os.path.isdir(state):
        stale = [os.path.join(d, f) for d, _, fs in os.walk(state) for f in fs if "kettle" in f]
        assert not stale, stale
    assert not kettle_processes(), "still running: %s" % kettle_processes()


def test_package():
    for tool in ("dpkg-buildpackage", "dh", "lintian", "apt-get"):
        h.need(tool)
    with tempfile.TemporaryDirectory(prefix="kettle-deb-") as tmp:
        src = os.path.join(tmp, "kettle")
        copy_checkout(src)
        t0 = time.monotonic()
        # at the lowest priority: the rest of the suite, timing-sensitive
        # tests among them, runs beside this build
        run(NICE + ["dpkg-buildpackage", "-us", "-uc", "-b"], timeout=1500, cwd=src)
        print("  built in %.0fs" % (time.monotonic() - t0))
        debs = check_debs(tmp)

        changes = os.path.join(tmp, "kettle_%s_%s.changes" % (VERSION, ARCH))
        lint = subprocess.Popen(NICE + ["lintian", "--fail-on", "error", changes], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=ENV)
        try:
            if os.geteuid() == 0:
                install_and_purge(debs)
            else:
                print("  not root: install and purge left out")
            out, _ = lint.communicate(timeout=900)
        finally:
            if lint.poll() is None:
                lint.kill()
                lint.wait()
        tags = [l for l in out.splitlines() if re.match(r"^[EWIPX]: ", l)]
        for l in tags:
            print("  lintian " + l)
        errors = [l for l in tags if l.startswith("E: ")]
        assert not errors and lint.returncode == 0, "lintian (exit %d):\n%s" % (lint.returncode, out)
    if os.geteuid() != 0:
        h.skip("installing the package needs root (it was built and lintian passed)")


def install_and_purge(debs):
    lock = wait_lock()
    try:
        if os.path.exists(MARK):
            purge()  # what a killed run of this test left
        if any(known(p) for p in PKGS) or os.path.exists("/usr/bin/kettled") \
                or os.path.exists("/etc/kettle"):
            h.skip("kettle is installed on this machine (not by this test): left alone")
        try:
            open(MARK, "w").close()
            run(["apt-get", "install", "-y", "-q", "--no-install-recommends",
                 "-o", "DPkg::Lock::Timeout=300"] + [debs[p] for p in PKGS])
            check_installed()
            # an instance the administrator enabled: its link goes on purge
            sc = shutil.which("systemctl")
            if sc:
                run([sc, "enable", "kettled@1.service"])
                assert os.path.islink("/etc/systemd/system/kettled.target.wants/kettled@1.service")
            listed = set()
            for p in PKGS:
                listed |= set(run(["dpkg-query", "-L", p]).split("\n")) - {""}
            purge()
            check_purged(listed)
        finally:
            purge()
    finally:
        os.close(lock)


def version_arch():
    with open(os.path.join(h.SRCDIR, "debian", "changelog")) as f:
        version = re.match(r"kettle \(([^)]+)\)", f.readline()).group(1)
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True,
                          text=True).stdout.strip()
    return version, arch


os.environ.setdefault("KETTLE_TEST_TIMEOUT", "1800")
VERSION, ARCH = version_arch()
h.main(globals())
