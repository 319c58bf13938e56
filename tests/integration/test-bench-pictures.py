"""kettle-bench's pictures of latency: --hgrm writes HdrHistogram's
percentile format, whose percentiles agree with --json's; --svg writes a
self-contained SVG that parses as XML and that rsvg-convert renders to a
PNG of the right size, with the runs' curves in their colours; --plot
overlays saved runs. Runs against kettle-db with a spread of latencies."""
import json
import os
import re
import struct
import subprocess
import tempfile
import xml.etree.ElementTree as ET
import zlib

import harness as h

SVG_NS = "{http://www.w3.org/2000/svg}"
WIDTH, HEIGHT = 960, 720
BLUE, RED = (0x1f, 0x77, 0xb4), (0xd6, 0x27, 0x28)  # the first two runs' colours


def bench(*args, check=True):
    exe = h.program("kettle-bench")
    r = subprocess.run([exe, "--quiet"] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=120)
    for mark in h.SANITIZER_MARKS:
        assert mark not in r.stderr, r.stderr[-4000:]
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def read_hgrm(path):
    """(rows [(value, percentile, total, inverse or None)], footer dict)"""
    with open(path) as f:
        lines = f.read().split("\n")
    assert lines[0].split() == ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"], lines[0]
    assert lines[1] == ""
    rows, footer = [], {}
    for line in lines[2:]:
        if not line:
            continue
        if line.startswith("#["):
            for k, v in re.findall(r"(\w[\w ]*?)\s*=\s*([\d.]+)", line):
                footer[k.strip()] = float(v)
            continue
        f = line.split()
        assert len(f) in (3, 4), line
        rows.append((float(f[0]), float(f[1]), int(f[2]), float(f[3]) if len(f) == 4 else None))
    return rows, footer


def check_on_spectrum(rows, p, value):
    """value (ms, to the .hgrm's 3 decimals) is the spectrum's at level p."""
    at = [r for r in rows if abs(r[1] - p) < 1e-12]
    if at:
        assert abs(at[0][0] - value) <= 0.0015, (p, at[0], value)
        return
    below = [r for r in rows if r[1] < p][-1]
    above = next(r for r in rows if r[1] > p)
    assert below[0] - 0.0015 <= value <= above[0] + 0.0015, (p, below, value, above)


def png_pixels(path):
    """(width, height, rows of (r, g, b) tuples) of an 8-bit RGB or RGBA PNG."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, ht, depth, ctype = ihdr[:4]
    assert depth == 8 and ctype in (2, 6), ihdr
    bpp = 3 if ctype == 2 else 4
    raw, stride, prev, out, i = zlib.decompress(idat), w * bpp, bytearray(w * bpp), [], 0
    for _ in range(ht):
        ft, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if ft == 1:
                line[x] = (line[x] + a) & 255
            elif ft == 2:
                line[x] = (line[x] + b) & 255
            elif ft == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif ft == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out.append([tuple(line[x:x + 3]) for x in range(0, stride, bpp)])
        prev = line
    return w, ht, out


def render(svg_path):
    png = svg_path + ".png"
    subprocess.run([h.need("rsvg-convert"), svg_path, "-o", png], check=True, timeout=60)
    return png_pixels(png)


def near(c, want, tol=40):
    return all(abs(a - b) <= tol for a, b in zip(c, want))


def count_colour(pixels, want, top=0, bottom=HEIGHT):
    return sum(1 for row in pixels[top:bottom] for c in row if near(c, want))


def parse_svg(path):
    root = ET.parse(path).getroot()
    assert root.tag == SVG_NS + "svg", root.tag
    assert root.get("width") == str(WIDTH) and root.get("height") == str(HEIGHT)
    lines = {"spectrum": [], "timeline": []}
    for pl in root.iter(SVG_NS + "polyline"):
        pts = [tuple(map(float, p.split(","))) for p in pl.get("points").split()]
        lines[pl.get("class")].append((pl.get("stroke"), pts))
    legend = ["".join(t.itertext()) for t in root.iter(SVG_NS + "text") if t.get("class") == "legend"]
    return lines, legend


def test_hgrm_agrees_with_json_and_svg_renders():
    db = h.Server("kettle-db", "--latency", "uniform 1ms 9ms", "--seed", "3")
    with tempfile.TemporaryDirectory() as d:
        js, hg, svg = (os.path.join(d, n) for n in ("run.json", "run.hgrm", "run.svg"))
        bench("-p", db.port, "-c", 20, "-n", 4000, "--seed", 1, "--json", js, "--hgrm", hg,
              "--svg", svg)
        with open(js) as f:
            j = json.load(f)
        rows, footer = read_hgrm(hg)
        lat = j["latency_ms"]
        # HdrHistogram's levels: 0, 10, ..., 50, 55, ..., 75, 77.5, ... then 100
        levels = [r[1] for r in rows]
        assert levels[:7] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.55], levels[:7]
        assert levels == sorted(levels) and levels[-1] == 1.0 and rows[-1][3] is None
        assert [r[0] for r in rows] == sorted(r[0] for r in rows), "values not monotonic"
        for v, p, total, inv in rows[:-1]:
            assert abs(inv - 1 / (1 - p)) < 0.01 * inv, (p, inv)
        assert rows[-1][2] == j["requests"] == int(footer["Total count"])
        # --json's percentiles on the .hgrm's spectrum: equal at a level it
        # prints (50%, 90%), between the rows around it elsewhere (99%, 99.9%)
        for name, p in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)):
            check_on_spectrum(rows, p, lat[name])
        assert abs(rows[0][0] - lat["min"]) <= 0.0015 and abs(rows[-1][0] - lat["max"]) <= 0.0015
        assert abs(footer["Mean"] - lat["mean"]) <= 0.0015 and abs(footer["Max"] - lat["max"]) <= 0.0015
        # uniform 1..9 ms: no reply beats its delay, so the median is at
        # least the median that kettle-db scheduled (near 5 ms)
        sched = float(h.info(h.Client(db.port), "delay")["delay_scheduled_p50_us"]) / 1000
        assert 4 < sched < 6, sched
        assert lat["p50"] >= sched * 0.99 and lat["min"] >= 1, (lat, sched)

        lines, legend = parse_svg(svg)
        assert len(lines["spectrum"]) == 1 and len(lines["timeline"]) == 1, lines.keys()
        pts = lines["spectrum"][0][1]
        assert len(pts) > 20
        assert [x for x, _ in pts] == sorted(x for x, _ in pts)
        # SVG's y grows downwards: latency rising along the percentiles
        assert [y for _, y in pts] == sorted((y for _, y in pts), reverse=True)
        assert len(legend) == 1 and "GET __rand_int__" in legend[0], legend
        w, ht, pixels = render(svg)
        assert (w, ht) == (WIDTH, HEIGHT)
        # the run's colour is drawn in both panels (spectrum above y=440, timeline below)
        assert count_colour(pixels, BLUE, 60, 440) > 300
        assert count_colour(pixels, BLUE, 480, 680) > 300
        assert count_colour(pixels, RED) == 0
    db.stop()


def test_plot_overlays_saved_runs():
    db = h.Server("kettle-db", "--latency", "uniform 1ms 3ms", "--seed", "4")
    with tempfile.TemporaryDirectory() as d:
        fast, slow, svg = (os.path.join(d, n) for n in ("fast.json", "slow.json", "both.svg"))
        bench("-p", db.port, "-c", 10, "-n", 2000, "--json", fast)
        with h.Client(db.port) as c:
            assert c.call("CONFIG", "SET", "latency", "uniform 5ms 15ms") == "OK"
        bench("-p", db.port, "-c", 10, "-n", 2000, "--json", slow, "--", "MGET", "1", "2")
        r = bench("--plot", fast, slow, "--svg", svg)
        assert r.stdout == "" and r.stderr == ""
        lines, legend = parse_svg(svg)
        assert len(lines["spectrum"]) == 2 and len(lines["timeline"]) == 2
        assert lines["spectrum"][0][0] != lines["spectrum"][1][0], "one colour for two runs"
        assert legend[0].startswith("fast: GET __rand_int__") and legend[1].startswith("slow: MGET 1 2")
        # the slow run's curve lies above (smaller y) the fast one's at the median
        med = [min(pts, key=lambda p: abs(p[0] - 80 - 0.30103 / 4 * 850))[1]
               for _, pts in lines["spectrum"]]
        assert med[1] < med[0], med
        w, ht, pixels = render(svg)
        assert (w, ht) == (WIDTH, HEIGHT)
        assert count_colour(pixels, BLUE, 60, 440) > 300 and count_colour(pixels, RED, 60, 440) > 300
        # a saved run read back gives the same percentiles: one run's .hgrm from its JSON
        hg = os.path.join(d, "fast.hgrm")
        bench("--plot", fast, "--svg", os.path.join(d, "f.svg"), "--hgrm", hg)
        with open(fast) as f:
            lat = json.load(f)["latency_ms"]
        rows, _ = read_hgrm(hg)
        for name, p in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
            check_on_spectrum(rows, p, lat[name])
    db.stop()


def test_plot_errors():
    with tempfile.TemporaryDirectory() as d:
        bad = os.path.join(d, "bad.json")
        with open(bad, "w") as f:
            f.write('{"tool": "something else"}')
        r = bench("--plot", bad, "--svg", os.path.join(d, "x.svg"), check=False)
        assert r.returncode == 1 and "not a kettle-bench --json report" in r.stderr, r.stderr
        r = bench("--plot", os.path.join(d, "missing.json"), "--svg", os.path.join(d, "x.svg"),
                  check=False)
        assert r.returncode == 1 and "missing.json" in r.stderr, r.stderr
        r = bench("--plot", bad, check=False)
        assert r.returncode == 2 and "--svg" in r.stderr
        r = bench("--plot", bad, bad, "--svg", "x.svg", "--hgrm", "x.hgrm", check=False)
        assert r.returncode == 2 and "--hgrm" in r.stderr
    db = h.Server("kettle-db")
    r = bench("-p", db.port, "-n", 100, "--svg", "/nonexistent-dir/x.svg", check=False)
    assert r.returncode == 1 and "cannot write /nonexistent-dir/x.svg" in r.stderr, r.stderr
    db.stop()


h.main(globals())
