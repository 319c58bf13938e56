"""The systemd units: `systemd-analyze verify` is clean (the template
both as a template and as an instance) and the hardening exposure score of
the services is at most 1.5, the template's no higher than
kettled.service's. Skipped where systemd-analyze is absent."""
import os
import re
import subprocess
import tempfile

import harness as h

UNITS = ["kettled.service", "kettled.socket", "kettle-db.service", "kettled@.service",
         "kettled.target"]


def render(tmp):
    """The units as installed (systemd/local.am's substitutions), but with
    ExecStart pointing into the build tree so that verify finds the
    programs."""
    with open(os.path.join(h.SRCDIR, "systemd", "sandbox.inc")) as f:
        sandbox = f.read()
    for u in UNITS:
        src = os.path.join(h.SRCDIR, "systemd", u)
        if os.path.exists(src + ".in"):
            src += ".in"
        with open(src) as f:
            text = f.read()
        text = text.replace("@bindir@", h.BUILDDIR).replace("@sysconfdir@", "/etc")
        text = re.sub(r"(?m)^@sandbox@\n", lambda m: sandbox, text)
        assert not re.search(r"@[a-z_]+@", text), u + ": unsubstituted @...@"
        with open(os.path.join(tmp, u), "w") as f:
            f.write(text)


def test_verify():
    exe = h.need("systemd-analyze")
    h.program("kettled")
    h.program("kettle-db")
    with tempfile.TemporaryDirectory() as tmp:
        render(tmp)
        # the template as such, and an instance of it (which checks its command)
        paths = [os.path.join(tmp, u) for u in UNITS + ["kettled@1.service"]]
        r = subprocess.run([exe, "verify", "--man=no"] + paths, capture_output=True, text=True,
                           cwd=tmp, timeout=60)
        # Without systemd as PID 1, verify may note that it cannot reach the
        # manager; every line about our units is a finding.
        findings = [l for l in (r.stdout + r.stderr).splitlines() if "kettle" in l]
        assert not findings, "\n".join(findings)


def test_security_exposure():
    exe = h.need("systemd-analyze")
    with tempfile.TemporaryDirectory() as tmp:
        render(tmp)
        scores = {}
        for u in ("kettled.service", "kettle-db.service", "kettled@1.service"):
            r = subprocess.run([exe, "security", "--offline=yes", "--no-pager", u],
                               capture_output=True, text=True, cwd=tmp, timeout=60)
            m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout + r.stderr)
            assert m, r.stdout + r.stderr
            scores[u] = score = float(m.group(1))
            print("  %s exposure %.1f" % (u, score))
            assert score <= 1.5, "%s exposure %.1f > 1.5" % (u, score)
        assert scores["kettled@1.service"] <= scores["kettled.service"], scores


def test_io_uring_allowed_by_filter():
    """The syscall filter of the units must leave io_uring usable."""
    exe = h.need("systemd-analyze")
    r = subprocess.run([exe, "syscall-filter", "@system-service"], capture_output=True,
                       text=True, timeout=30)
    groups = re.findall(r"^\s+(@\S+)", r.stdout, re.M)
    allowed = r.stdout
    for g in groups:
        allowed += subprocess.run([exe, "syscall-filter", g], capture_output=True, text=True,
                                  timeout=30).stdout
    for sc in ("io_uring_setup", "io_uring_enter", "io_uring_register"):
        assert re.search(r"^\s+%s$" % sc, allowed, re.M), sc + " not in @system-service"
    priv = subprocess.run([exe, "syscall-filter", "@privileged"], capture_output=True,
                          text=True, timeout=30).stdout
    assert "io_uring_setup" not in priv


h.main(globals())
