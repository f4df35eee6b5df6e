"""chart.svg: time, peak RSS and minor page faults of every workload as ratios to the base
allocator, one bar per allocator, on a log scale, with the spread of the rounds as
whiskers."""

import math

from .allocators import color


def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_chart(path, cells, workloads, allocs, base, geo, title):
    bars = [a for a in allocs if a != base]
    groups = [w.name for w in workloads] + ["geomean"]
    left, right, top = 70, 20, 78
    panel_h, panel_gap, label_h = 230, 40, 110
    nb = max(1, len(bars))
    # bars 9 px wide, wider (up to 20) when few workloads leave room in a 1000 px chart
    bar_w = min(20.0, max(9.0, (1000 - left - right) / len(groups) * 0.75 / nb))
    group_w = max(nb * bar_w + 14, (1000 - left - right) / len(groups))
    width = int(left + right + group_w * len(groups))
    panels = (("score", "time ×" + base, 0), ("maxrss_kb", "peak RSS ×" + base, 1),
              ("minflt", "minor faults ×" + base, 5))  # attribute, label, index in geo
    height = top + len(panels) * (panel_h + panel_gap) - panel_gap + label_h + 20

    def values(attr, geo_index):
        v = {}
        for g in groups:
            for a in bars:
                if g == "geomean":
                    v[(g, a)] = ("ok", geo[a][geo_index], None, None)
                    continue
                c = cells[(g, a)]
                if not c.runs:
                    v[(g, a)] = ("none", None, None, None)
                elif not c.good:
                    v[(g, a)] = ("fail", None, None, None)
                else:
                    b = cells[(g, base)]
                    if not b.good:
                        v[(g, a)] = ("nobase", None, None, None)
                    else:
                        bm = b.med(attr)
                        v[(g, a)] = ("ok", c.med(attr) / bm, c.lo(attr) / bm, c.hi(attr) / bm)
        return v

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="22" font-size="15" font-weight="bold">{esc(title)}</text>']
    # legend
    lx = left
    for a in bars:
        out.append(f'<rect x="{lx}" y="34" width="12" height="12" fill="{color(a)}"/>')
        out.append(f'<text x="{lx + 16}" y="44">{esc(a)}</text>')
        lx += 24 + 7 * len(a)
    out.append(f'<line x1="{lx}" y1="40" x2="{lx + 24}" y2="40" stroke="black" stroke-width="1.5"/>')
    out.append(f'<text x="{lx + 28}" y="44">{esc(base)} = 1.0</text>')
    lx += 90 + 7 * len(base)
    out.append(f'<text x="{lx}" y="44" fill="#c00" font-weight="bold">F</text>')
    out.append(f'<text x="{lx + 12}" y="44">= failed (crash, timeout or wrong output)</text>')
    out.append(f'<text x="{left}" y="62" fill="#555">log scale; whiskers: min–max of the rounds '
               f'(divided by the {esc(base)} median); hover a bar for its value</text>')

    for pi, (attr, label, geo_index) in enumerate(panels):
        v = values(attr, geo_index)
        limit = 7 if attr == "minflt" else 5  # fault ratios span more: 1/128 .. 128
        y0 = top + pi * (panel_h + panel_gap)
        nums = [x for s, r_, lo, hi in v.values() if s == "ok" for x in (r_, lo, hi) if x]
        lo_e = math.floor(math.log2(min(nums + [1.0]))) if nums else -1
        hi_e = math.ceil(math.log2(max(nums + [1.0]))) if nums else 1
        lo_e, hi_e = max(min(lo_e, -1), -limit), min(max(hi_e, 1), limit)

        def ypos(x):
            e = math.log2(min(max(x, 2.0 ** lo_e), 2.0 ** hi_e))
            return y0 + panel_h * (hi_e - e) / (hi_e - lo_e)

        out.append(f'<text x="12" y="{y0 + panel_h / 2}" transform="rotate(-90 12 {y0 + panel_h / 2})" '
                   f'text-anchor="middle" font-size="12">{esc(label)}</text>')
        for e in range(lo_e, hi_e + 1):
            y = ypos(2.0 ** e)
            val = 2.0 ** e
            lab = f"{val:g}×"
            out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" '
                       f'stroke="#e4e4e4"/>')
            out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{lab}</text>')
        for gi, g in enumerate(groups):
            gx0 = left + gi * group_w
            gx = gx0 + (group_w - nb * bar_w) / 2
            if gi % 2 == 1:
                out.append(f'<rect x="{gx0:.1f}" y="{y0}" width="{group_w:.1f}" height="{panel_h}" '
                           f'fill="#f7f7f7"/>')
            for ai, a in enumerate(bars):
                x = gx + ai * bar_w
                s, r_, lo, hi = v[(g, a)]
                fill = color(a)
                if s == "ok" and r_:
                    y1, yb = ypos(r_), ypos(1.0)
                    ytop, h = min(y1, yb), max(abs(yb - y1), 1.0)
                    tip = f"{g} / {a}: {r_:.3f}×"
                    if lo and hi:
                        tip += f" (min {lo:.3f}, max {hi:.3f})"
                    out.append(f'<rect x="{x:.1f}" y="{ytop:.1f}" width="{bar_w - 1:.1f}" height="{h:.1f}" '
                               f'fill="{fill}"><title>{esc(tip)}</title></rect>')
                    if lo and hi:
                        cx = x + (bar_w - 1) / 2
                        out.append(f'<line x1="{cx:.1f}" y1="{ypos(lo):.1f}" x2="{cx:.1f}" '
                                   f'y2="{ypos(hi):.1f}" stroke="black" stroke-width="0.8"/>')
                elif s == "fail":
                    out.append(f'<text x="{x + 1:.1f}" y="{ypos(1.0) - 3:.1f}" fill="#c00" '
                               f'font-weight="bold"><title>{esc(g)} / {esc(a)}: FAIL</title>F</text>')
        yb = ypos(1.0)
        out.append(f'<line x1="{left}" y1="{yb:.1f}" x2="{width - right}" y2="{yb:.1f}" '
                   f'stroke="black" stroke-width="1.5"/>')
        out.append(f'<rect x="{left}" y="{y0}" width="{width - left - right}" height="{panel_h}" '
                   f'fill="none" stroke="#999"/>')
    ylab = top + len(panels) * (panel_h + panel_gap) - panel_gap + 8
    labels = {w.name: w.label() for w in workloads}
    for gi, g in enumerate(groups):
        cx = left + gi * group_w + group_w / 2
        weight = ' font-weight="bold"' if g == "geomean" else ""
        out.append(f'<text x="{cx:.1f}" y="{ylab}" transform="rotate(-50 {cx:.1f} {ylab})" '
                   f'text-anchor="end"{weight}>{esc(labels.get(g, g))}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


