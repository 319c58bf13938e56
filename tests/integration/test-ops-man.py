"""The manual pages: groff renders each without a warning, each program's
page documents every option its --help lists, kettled.conf(5) documents
exactly the options `kettled --write-conf` writes, and the version in each
page's header is the programs' version."""
import os
import re
import shutil
import subprocess

import harness as h

PAGES = {  # page -> the program whose --help it documents
    "kettled.8": "kettled",
    "kettle-db.8": "kettle-db",
    "kettle-bench.1": "kettle-bench",
    "kettle-cli.1": "kettle-cli",
    "kettled.conf.5": None,
    "libkettle.3": None,
}


def page(name):
    with open(os.path.join(h.SRCDIR, "man", name)) as f:
        return f.read()


def plain(roff):
    """The words of a roff source, with escapes for dashes and fonts undone."""
    t = roff.replace("\\-", "-").replace("\\&", "")
    return re.sub(r"\\f[BIRP]", "", t)


def run(*argv):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    return r.stdout + r.stderr


def long_options(prog):
    """The --long options named in prog --help."""
    out = run(h.program(prog), "--help")
    return sorted(set(re.findall(r"(?<![\w-])--([a-z][a-z0-9-]+)", out)))


def test_groff_clean():
    groff = shutil.which("groff")
    if groff is None:
        print("  groff not installed: rendering not checked")
        return
    for name in PAGES:
        path = os.path.join(h.SRCDIR, "man", name)
        r = subprocess.run([groff, "-man", "-ww", "-z", path], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 0 and not r.stderr.strip(), "%s: %s" % (name, r.stderr)


def test_all_pages_installed():
    """man/local.am installs every page in man/."""
    with open(os.path.join(h.SRCDIR, "man", "local.am")) as f:
        am = f.read()
    listed = set(re.findall(r"man/([\w.-]+\.[1-8])\b", am))
    present = {f for f in os.listdir(os.path.join(h.SRCDIR, "man")) if re.search(r"\.[1-8]$", f)}
    assert listed == present == set(PAGES), (listed, present)


def test_options_documented():
    for name, prog in PAGES.items():
        if prog is None:
            continue
        text = plain(page(name))
        if prog == "kettled":  # the conf page holds the options' details
            text += plain(page("kettled.conf.5"))
        missing = [o for o in long_options(prog)
                   if "--" + o not in text and not re.search(r"^\.BI? %s\b" % re.escape(o),
                                                             text, re.M)]
        assert not missing, "%s lacks %s" % (name, ", ".join("--" + o for o in missing))


def test_conf_page_matches_write_conf():
    written = set(re.findall(r"^# ?([a-z][a-z0-9-]*) =", run(h.program("kettled"), "--write-conf"),
                             re.M))
    assert written, "kettled --write-conf printed no option"
    text = plain(page("kettled.conf.5"))
    documented = set(re.findall(r'^\.BI ([a-z][a-z0-9-]*) " = ', text, re.M))
    assert written - documented == set(), "undocumented: %s" % sorted(written - documented)
    assert documented - written == set(), "no such option: %s" % sorted(documented - written)


def test_version():
    out = run(h.program("kettled"), "--version")
    m = re.match(r"kettled (\S+)", out)
    assert m, out
    for name in PAGES:
        th = re.search(r'^\.TH \S+ \d+ \S+ "kettle (\S+)"', page(name), re.M)
        assert th and th.group(1) == m.group(1), "%s: .TH says %s, kettled %s" % (
            name, th and th.group(1), m.group(1))


h.main(globals())
