#!/usr/bin/env python3
"""plot_test.py SIM SOURCE_DIR: checks memcg-sim --plot's SVG structure on three lessons.

A failed command is marked only in the panel of the group it addressed (hollow when the line
has `!`), the v1 kmem limit is drawn, socket drops / blocks / forced segments go to the
socket's group, the protocol panel shows pressure, and the x axis names the time where the
virtual clock moved."""
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

SVG = "{http://www.w3.org/2000/svg}"
sim, root = sys.argv[1], sys.argv[2]
failures = []


def plot(lesson):
    with tempfile.NamedTemporaryFile(suffix=".svg") as f:
        subprocess.run([sim, "--plot", f.name, f"{root}/examples/scenarios/{lesson}"],
                       check=True, stdout=subprocess.DEVNULL)
        tree = ET.parse(f.name)
    return {g.get("data-group"): g for g in tree.iter(SVG + "g") if g.get("class") == "panel"}


def marks(panel, cls):
    return [e for e in panel.iter() if e.get("class") == cls]


def check(what, ok):
    print(("ok: " if ok else "FAILED: ") + what)
    if not ok:
        failures.append(what)


p = plot("container.scn")
check("container: panels /, box, split, slabby and no protocol panel",
      set(p) == {"/", "box", "split", "slabby"})
check("container: no failed mark in box or /", not marks(p["box"], "mark-failed") and not marks(p["/"], "mark-failed"))
failed = marks(p["split"], "mark-failed")
check("container: split's two expected refusals, hollow, in split's panel only",
      len(failed) == 2 and all(m.get("fill") == "white" for m in failed))
check("container: split's kmem limit drawn",
      any(e.get("stroke") == "#e15759" and e.get("stroke-dasharray") for e in p["split"].iter(SVG + "path")))

p = plot("tcp-buffers.scn")
check("tcp-buffers: a protocol panel", "-" in p)
check("tcp-buffers: drops in web and rx", marks(p["web"], "mark-drop") and marks(p["rx"], "mark-drop"))
check("tcp-buffers: forced segments in rx, a forced send in tx",
      marks(p["rx"], "mark-forced") and marks(p["tx"], "mark-forced"))
check("tcp-buffers: blocks in tx only",
      marks(p["tx"], "mark-block") and not any(marks(p[g], "mark-block") for g in p if g != "tx"))
check("tcp-buffers: the protocol's pressure entered and left", len(marks(p["-"], "mark-pressure")) >= 2)
check("tcp-buffers: the tcp limit drawn in web",
      any(e.get("stroke") == "#b07aa1" and e.get("stroke-dasharray") for e in p["web"].iter(SVG + "path")))

p = plot("pressure.scn")
check("pressure: time on the x axis where the clock moved",
      any((t.text or "").startswith("t=") for t in p["/"].iter(SVG + "text")))

sys.exit(1 if failures else 0)
