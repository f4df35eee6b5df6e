//! The report a person opens: one self-contained HTML page per profile (`X.html`), and
//! `index.html` listing every process of a run.
//!
//! A page holds, with no file or network access of its own: the process's command line,
//! pid, duration and sampling interval; the memory-over-time chart (an SVG drawn here:
//! estimated live bytes, resident bytes, the peak marked); and one tab per view (the
//! peak, allocations since start, live at the dump, which at exit are the leaks), each
//! with a flame graph and a table of its top stacks. The flame graphs are drawn in the
//! browser by the page's own script (`page.js`) from a JSON tree embedded in the page:
//! a click on a frame zooms to it, a click on the root or an ancestor zooms out. Opened
//! with `#selftest`, the script draws every view, clicks a frame, and writes what it saw
//! into the page (the headless-browser test reads it).

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::convert::Converted;
use crate::raw::{Point, RawStack};
use crate::report::{human_bytes, utc_time, View};

const STYLE: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");
/// Rows in each view's table of top stacks.
const TOP_STACKS: usize = 25;

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A JSON string literal that is also safe inside a `<script>` element.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A command line as a person would type it (arguments quoted for a POSIX shell where
/// needed).
pub fn shell_words(args: &[String]) -> String {
    let quote = |arg: &String| {
        let plain = !arg.is_empty()
            && arg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%^".contains(c));
        if plain {
            arg.clone()
        } else {
            format!("'{}'", arg.replace('\'', "'\\''"))
        }
    };
    args.iter().map(quote).collect::<Vec<_>>().join(" ")
}

/// `1234567` microseconds → `1.23 s`.
pub fn human_duration(us: u64) -> String {
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.1} ms", us as f64 / 1e3)
    } else if us < 120_000_000 {
        format!("{:.2} s", us as f64 / 1e6)
    } else {
        format!("{:.1} min", us as f64 / 60e6)
    }
}

/// What the index says about one profile.
#[derive(Debug, Clone)]
pub struct Summary {
    pub pid: u64,
    pub exe: String,
    pub cmdline: Vec<String>,
    pub reason: String,
    pub elapsed_us: Option<u64>,
    pub peak_bytes: Option<u64>,
    pub alloc_bytes: u64,
    pub live_bytes: u64,
    pub alloc_samples: u64,
    /// The page's file name (beside the index), when one was written.
    pub page: Option<String>,
    /// The raw file's name.
    pub raw: String,
}

impl Summary {
    pub fn of(converted: &Converted<'_>, raw: String, page: Option<String>) -> Summary {
        let profile = converted.profile;
        let extra = profile.extra.as_ref();
        Summary {
            pid: profile.pid,
            exe: profile.exe.clone(),
            cmdline: extra.map(|e| e.cmdline.clone()).unwrap_or_default(),
            reason: profile.reason.clone(),
            elapsed_us: extra.map(|e| e.elapsed_us),
            peak_bytes: extra.map(|e| e.peak_bytes),
            alloc_bytes: profile.stacks.iter().map(|s| s.alloc_bytes).sum(),
            live_bytes: profile.stacks.iter().map(|s| s.inuse_bytes).sum(),
            alloc_samples: profile.stacks.iter().map(|s| s.alloc_samples).sum(),
            page,
            raw,
        }
    }

    /// The program's name.
    pub fn program(&self) -> &str {
        self.exe.rsplit('/').next().unwrap_or(&self.exe)
    }

    /// The command line, or the program when unknown.
    pub fn command(&self) -> String {
        if self.cmdline.is_empty() {
            self.exe.clone()
        } else {
            shell_words(&self.cmdline)
        }
    }

    /// How the index orders processes: biggest peak first, then most allocated.
    pub fn size_key(&self) -> (u64, u64) {
        (self.peak_bytes.unwrap_or(self.live_bytes), self.alloc_bytes)
    }
}

/// The frame-name table and the trees of one page's flame graphs.
struct Names {
    index: HashMap<String, usize>,
    list: Vec<String>,
}

impl Names {
    fn id(&mut self, name: &str) -> usize {
        if let Some(&id) = self.index.get(name) {
            return id;
        }
        self.list.push(name.to_string());
        self.index.insert(name.to_string(), self.list.len() - 1);
        self.list.len() - 1
    }
}

/// A flame graph's tree: a frame, its bytes (its own and its callees'), its callees.
struct Node {
    name: usize,
    bytes: u64,
    children: Vec<Node>,
}

impl Node {
    fn child(&mut self, name: usize) -> &mut Node {
        let position = self.children.iter().position(|c| c.name == name);
        let i = match position {
            Some(i) => i,
            None => {
                self.children.push(Node {
                    name,
                    bytes: 0,
                    children: Vec::new(),
                });
                self.children.len() - 1
            }
        };
        &mut self.children[i]
    }

    /// `[name, bytes, [children…]]`, the biggest callee first.
    fn write_json(&mut self, out: &mut String) {
        self.children
            .sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.name.cmp(&b.name)));
        let _ = write!(out, "[{},{},[", self.name, self.bytes);
        for (i, child) in self.children.iter_mut().enumerate() {
            if i > 0 {
                out.push(',');
            }
            child.write_json(out);
        }
        out.push_str("]]");
    }
}

fn tree(converted: &Converted<'_>, view: View, names: &mut Names) -> Node {
    let mut root = Node {
        name: names.id("all"),
        bytes: 0,
        children: Vec::new(),
    };
    for stack in &converted.profile.stacks {
        let bytes = view.bytes(stack);
        if bytes == 0 {
            continue;
        }
        root.bytes += bytes;
        let mut node = &mut root;
        for name in converted.names_root_first(stack) {
            node = node.child(names.id(&name));
            node.bytes += bytes;
        }
    }
    root
}

/// A view's title and what it shows, for the page.
fn view_text(view: View, exit: bool) -> (&'static str, &'static str) {
    match view {
        View::Peak => (
            "Peak",
            "What was live at the moment the live heap was largest: the stacks that \
             allocated the memory the process needed most.",
        ),
        View::Alloc => (
            "Allocations",
            "Every allocation since the start, by stack, whether freed or not: where \
             allocation volume (and time spent allocating) goes. Short-lived: freed within \
             the threshold below of being allocated.",
        ),
        View::Live if exit => (
            "Leaks",
            "Blocks still live when the process exited: never freed.",
        ),
        View::Live => ("Live", "Blocks live when this profile was written."),
    }
}

/// The innermost frames of a stack as `function (file:line)`, innermost first.
fn frame_texts(converted: &Converted<'_>, stack: &RawStack) -> Vec<String> {
    if stack.pcs.is_empty() {
        return vec![crate::pprof::OTHER_STACKS.to_string()];
    }
    let maps = &converted.profile.maps;
    let mut out = Vec::new();
    for &pc in &stack.pcs {
        let location = converted.location(pc);
        if location.frames.is_empty() {
            out.push(location.unknown_name(maps));
            continue;
        }
        for frame in &location.frames {
            let place = match &frame.file {
                Some(file) if frame.line > 0 => {
                    let short = file.rsplit('/').next().unwrap_or(file);
                    format!(" ({short}:{})", frame.line)
                }
                _ => String::new(),
            };
            out.push(format!("{}{place}", frame.function));
        }
    }
    out
}

/// The table of a view's top stacks.
fn table(converted: &Converted<'_>, view: View, out: &mut String) {
    let mut stacks: Vec<&RawStack> = converted
        .profile
        .stacks
        .iter()
        .filter(|s| view.bytes(s) > 0)
        .collect();
    stacks.sort_by_key(|s| std::cmp::Reverse(view.bytes(s)));
    let total: u64 = stacks.iter().map(|s| view.bytes(s)).sum();
    let short_column = view == View::Alloc && converted.profile.extra.is_some();
    let _ = write!(
        out,
        "<table class=\"top\"><thead><tr><th>#</th><th>bytes</th><th>share</th>\
         <th>objects</th>{}<th>allocated at (innermost frame first)</th></tr></thead><tbody>",
        if short_column {
            "<th>short-lived</th>"
        } else {
            ""
        }
    );
    for (rank, stack) in stacks.iter().take(TOP_STACKS).enumerate() {
        let bytes = view.bytes(stack);
        let share = bytes as f64 * 100.0 / total.max(1) as f64;
        let frames = frame_texts(converted, stack);
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"num\" title=\"{bytes} bytes\">{}</td>\
             <td class=\"num\"><span class=\"bar\" style=\"width:{:.0}px\"></span>{share:.1}%</td>\
             <td class=\"num\">{}</td>",
            rank + 1,
            human_bytes(bytes),
            share * 0.6,
            view.objects(stack)
        );
        if short_column {
            let short = stack.short_bytes as f64 * 100.0 / stack.alloc_bytes.max(1) as f64;
            let _ = write!(out, "<td class=\"num\">{short:.0}%</td>");
        }
        let first = frames.first().map(String::as_str).unwrap_or("?");
        let _ = write!(
            out,
            "<td><details><summary><code>{}</code></summary><ol>",
            escape(first)
        );
        for frame in frames.iter().skip(1) {
            let _ = write!(out, "<li><code>{}</code></li>", escape(frame));
        }
        out.push_str("</ol></details></td></tr>");
    }
    out.push_str("</tbody></table>");
    if stacks.len() > TOP_STACKS {
        let _ = write!(
            out,
            "<p class=\"note\">{} more stacks; the folded file and the .pb.gz hold them all.</p>",
            stacks.len() - TOP_STACKS
        );
    }
}

/// Round numbers for an axis from 0 to at least `max`: (step, count).
fn axis_steps(max: f64) -> (f64, usize) {
    let max = max.max(1.0);
    let raw = max / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    (step, (max / step).ceil() as usize)
}

/// Byte steps in powers of two (1, 2, 4, 8 … KiB, MiB, …).
fn byte_axis_steps(max: f64) -> (f64, usize) {
    let max = max.max(1024.0);
    let mut step = 1024.0f64;
    while max / step > 6.0 {
        step *= 2.0;
    }
    (step, (max / step).ceil() as usize)
}

/// The memory-over-time chart.
fn chart(converted: &Converted<'_>, out: &mut String) {
    let Some(extra) = converted.profile.extra.as_ref() else {
        out.push_str(
            "<p class=\"note\">No timeline: this profile was written by a library that did \
             not record one (raw format version 1).</p>",
        );
        return;
    };
    let mut points: Vec<Point> = extra.points.clone();
    if extra.peak_bytes > 0 {
        // The line passes through the peak even between two timeline points.
        let resident = points
            .iter()
            .filter(|p| p.t_us <= extra.peak_us)
            .map(|p| p.resident_bytes)
            .next_back()
            .unwrap_or(0);
        points.push(Point {
            t_us: extra.peak_us,
            live_bytes: extra.peak_bytes,
            resident_bytes: resident,
            allocated_bytes: 0,
        });
        points.sort_by_key(|p| p.t_us);
    }
    if points.is_empty() {
        out.push_str("<p class=\"note\">No timeline points were recorded.</p>");
        return;
    }
    let (width, height) = (1000.0, 280.0);
    let (left, right, top, bottom) = (70.0, 20.0, 20.0, 40.0);
    let t_max = points
        .iter()
        .map(|p| p.t_us)
        .max()
        .unwrap_or(0)
        .max(extra.elapsed_us)
        .max(1) as f64;
    let y_max = points
        .iter()
        .map(|p| p.live_bytes.max(p.resident_bytes))
        .max()
        .unwrap_or(0) as f64;
    let (y_step, y_count) = byte_axis_steps(y_max);
    let y_top = y_step * y_count as f64;
    let (t_step, t_count) = axis_steps(t_max);
    let t_right = t_step * t_count as f64;
    let x = |t: f64| left + t / t_right * (width - left - right);
    let y = |b: f64| height - bottom - b / y_top * (height - top - bottom);
    let _ = write!(
        out,
        "<svg class=\"chart\" viewBox=\"0 0 {width} {height}\" role=\"img\" \
         aria-label=\"memory over time\">"
    );
    for i in 0..=y_count {
        let v = y_step * i as f64;
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{left}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\"/>\
             <text class=\"tick\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            width - right,
            left - 6.0,
            y(v) + 4.0,
            human_bytes(v as u64),
            yy = y(v)
        );
    }
    for i in 0..=t_count {
        let t = t_step * i as f64;
        let _ = write!(
            out,
            "<text class=\"tick\" x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x(t),
            height - bottom + 18.0,
            if i == 0 {
                "0".to_string()
            } else {
                human_duration(t as u64)
            }
        );
    }
    let polyline = |value: &dyn Fn(&Point) -> u64| {
        points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.t_us as f64), y(value(p) as f64)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let first_x = x(points.first().map(|p| p.t_us).unwrap_or(0) as f64);
    let last_x = x(points.last().map(|p| p.t_us).unwrap_or(0) as f64);
    let _ = write!(
        out,
        "<polygon class=\"live-area\" points=\"{first_x:.1},{base:.1} {} {last_x:.1},{base:.1}\"/>\
         <polyline class=\"live\" points=\"{}\"/>",
        polyline(&|p| p.live_bytes),
        polyline(&|p| p.live_bytes),
        base = y(0.0)
    );
    if points.iter().any(|p| p.resident_bytes > 0) {
        let resident: Vec<&Point> = points.iter().filter(|p| p.resident_bytes > 0).collect();
        let line = resident
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.t_us as f64), y(p.resident_bytes as f64)))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = write!(out, "<polyline class=\"resident\" points=\"{line}\"/>");
    }
    if extra.peak_bytes > 0 {
        let (px, py) = (x(extra.peak_us as f64), y(extra.peak_bytes as f64));
        let anchor = if px > width * 0.7 { "end" } else { "start" };
        let dx = if anchor == "end" { -8.0 } else { 8.0 };
        let _ = write!(
            out,
            "<g class=\"peak\"><line x1=\"{px:.1}\" x2=\"{px:.1}\" y1=\"{top}\" y2=\"{:.1}\"/>\
             <circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"5\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">peak {} at {}</text></g>",
            y(0.0),
            px + dx,
            (py - 8.0).max(top + 12.0),
            human_bytes(extra.peak_bytes),
            human_duration(extra.peak_us)
        );
    }
    out.push_str("</svg>");
    out.push_str(
        "<p class=\"legend\"><span class=\"key live\"></span> live heap (estimated from the \
         samples) <span class=\"key resident\"></span> resident memory of the process \
         (RSS) <span class=\"key peak\"></span> the peak, whose stacks the Peak tab shows</p>",
    );
}

/// The page of one profile.
pub fn page(converted: &Converted<'_>) -> String {
    let profile = converted.profile;
    let summary = Summary::of(converted, String::new(), None);
    let exit = profile.reason == "exit";
    let program = summary.program().to_string();
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>Heap profile: {} (pid {})</title><style>{STYLE}</style></head><body>",
        escape(&program),
        profile.pid
    );
    let _ = write!(
        out,
        "<header><h1>Heap profile of <code>{}</code></h1><p class=\"cmd\"><code>{}</code></p>",
        escape(&program),
        escape(&summary.command())
    );
    out.push_str("<dl class=\"facts\">");
    let mut fact = |name: &str, value: String| {
        let _ = write!(out, "<div><dt>{name}</dt><dd>{}</dd></div>", escape(&value));
    };
    fact("pid", profile.pid.to_string());
    if let Some(us) = summary.elapsed_us {
        fact("duration", human_duration(us));
    }
    fact(
        "profile written",
        format!("{} ({})", utc_time(profile.time_secs), profile.reason),
    );
    fact(
        "sampling interval",
        format!("{} on average", human_bytes(profile.interval_bytes)),
    );
    fact("executable", profile.exe.clone());
    out.push_str("</dl><div class=\"cards\">");
    let mut card = |id: &str, name: &str, value: String, note: String| {
        let _ = write!(
            out,
            "<div class=\"card\" id=\"card-{id}\"><div class=\"name\">{name}</div>\
             <div class=\"value\">{}</div><div class=\"note\">{}</div></div>",
            escape(&value),
            escape(&note)
        );
    };
    if let Some(extra) = profile.extra.as_ref() {
        card(
            "peak",
            "peak live heap",
            human_bytes(extra.peak_bytes),
            format!("at {}", human_duration(extra.peak_us)),
        );
    }
    let short: u64 = profile.stacks.iter().map(|s| s.short_bytes).sum();
    card(
        "alloc",
        "allocated in all",
        human_bytes(summary.alloc_bytes),
        if profile.extra.is_some() {
            format!(
                "{:.0}% of it short-lived",
                short as f64 * 100.0 / summary.alloc_bytes.max(1) as f64
            )
        } else {
            String::new()
        },
    );
    card(
        "live",
        if exit {
            "leaked (live at exit)"
        } else {
            "live at this dump"
        },
        human_bytes(summary.live_bytes),
        format!(
            "{} blocks",
            profile.stacks.iter().map(|s| s.inuse_objects).sum::<u64>()
        ),
    );
    if let Some(extra) = profile.extra.as_ref() {
        let resident = extra
            .points
            .iter()
            .map(|p| p.resident_bytes)
            .max()
            .unwrap_or(0);
        if resident > 0 {
            card(
                "resident",
                "peak resident (RSS)",
                human_bytes(resident),
                "as sampled on the timeline".to_string(),
            );
        }
    }
    out.push_str("</div></header>");

    out.push_str("<section id=\"timeline\"><h2>Memory over time</h2>");
    chart(converted, &mut out);
    out.push_str("</section>");

    let mut names = Names {
        index: HashMap::new(),
        list: Vec::new(),
    };
    let mut data = String::from("{\"views\":{");
    out.push_str("<nav id=\"tabs\">");
    let views: Vec<View> = View::ALL
        .iter()
        .copied()
        .filter(|v| v.available(profile))
        .collect();
    for (i, &view) in views.iter().enumerate() {
        let (title, _) = view_text(view, exit);
        let total: u64 = profile.stacks.iter().map(|s| view.bytes(s)).sum();
        let _ = write!(
            out,
            "<button class=\"tab{}\" data-view=\"{}\">{title} <span>{}</span></button>",
            if i == 0 { " on" } else { "" },
            view.id(),
            human_bytes(total)
        );
    }
    out.push_str("</nav>");
    for (i, &view) in views.iter().enumerate() {
        let (title, help) = view_text(view, exit);
        let mut root = tree(converted, view, &mut names);
        let _ = write!(
            out,
            "<section class=\"view\" id=\"view-{id}\"{hidden}><h2>{title}: {}</h2><p class=\"help\">{help}",
            human_bytes(root.bytes),
            id = view.id(),
            hidden = if i == 0 { "" } else { " hidden" }
        );
        if view == View::Alloc {
            if let Some(extra) = profile.extra.as_ref() {
                let _ = write!(
                    out,
                    " (threshold: {})",
                    human_duration(extra.short_lived_us)
                );
            }
        }
        out.push_str(" Click a frame to zoom in, the top bar to zoom out.</p>");
        if root.bytes == 0 {
            let empty = match view {
                View::Live if exit => {
                    "No leaks: no sampled block was live at exit. (Blocks are sampled; a \
                     leak much smaller than the sampling interval can go unseen.)"
                }
                _ => "No sampled blocks in this view.",
            };
            let _ = write!(out, "<p class=\"empty\">{empty}</p>");
        } else {
            let _ = write!(
                out,
                "<div class=\"flame\" id=\"flame-{}\"></div>",
                view.id()
            );
            table(converted, view, &mut out);
        }
        out.push_str("</section>");
        if i > 0 {
            data.push(',');
        }
        let _ = write!(data, "{}:", json_string(view.id()));
        root.write_json(&mut data);
    }
    data.push_str("},\"names\":[");
    for (i, name) in names.list.iter().enumerate() {
        if i > 0 {
            data.push(',');
        }
        data.push_str(&json_string(name));
    }
    data.push_str("]}");
    let _ = write!(
        out,
        "<footer>Written by oxprof from a raw profile of oxmalloc's sampling heap profiler \
         (<code>OXMALLOC_PROF=1</code>); bytes and counts are estimates from the sampled \
         blocks.</footer><pre id=\"selftest\" hidden></pre>\
         <script type=\"application/json\" id=\"data\">{data}</script>\
         <script>{SCRIPT}</script></body></html>"
    );
    out.push('\n');
    out
}

/// The index of a run's processes, biggest first; tiny ones listed without a page.
pub fn index(summaries: &[Summary]) -> String {
    let mut sorted: Vec<&Summary> = summaries.iter().collect();
    sorted.sort_by(|a, b| b.size_key().cmp(&a.size_key()).then(a.pid.cmp(&b.pid)));
    let drawn = sorted.iter().filter(|s| s.page.is_some()).count();
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Heap profiles: {} processes</title><style>{STYLE}</style></head><body>\
         <header><h1>Heap profiles of {} process{}</h1><p class=\"help\">Biggest first (by \
         peak live heap, then bytes allocated). {drawn} with a report; the others allocated \
         too little to draw (fewer than {} samples) and are only listed.</p></header>\
         <table class=\"top index\"><thead><tr><th>report</th><th>pid</th><th>program</th>\
         <th>peak</th><th>allocated</th><th>live at end</th><th>samples</th><th>duration</th>\
         <th>command line</th></tr></thead><tbody>",
        sorted.len(),
        sorted.len(),
        if sorted.len() == 1 { "" } else { "es" },
        crate::convert::TINY_SAMPLES
    );
    for s in sorted {
        let link = match &s.page {
            Some(page) => format!("<a href=\"{}\">open</a>", escape(page)),
            None => "<span class=\"note\">too small</span>".to_string(),
        };
        let _ = write!(
            out,
            "<tr{}><td>{link}</td><td>{}</td><td><code>{}</code></td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td><code class=\"cmdline\">{}</code></td></tr>",
            if s.page.is_none() {
                " class=\"tiny\""
            } else {
                ""
            },
            s.pid,
            escape(s.program()),
            s.peak_bytes.map(human_bytes).unwrap_or_else(|| "?".into()),
            human_bytes(s.alloc_bytes),
            human_bytes(s.live_bytes),
            s.alloc_samples,
            s.elapsed_us
                .map(human_duration)
                .unwrap_or_else(|| "?".into()),
            escape(&s.command())
        );
    }
    out.push_str("</tbody></table></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_for_html_json_and_shell() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(
            json_string("a\"b\\c</script>\n"),
            "\"a\\\"b\\\\c\\u003c/script\\u003e\\u000a\""
        );
        let args: Vec<String> = ["python3", "-c", "print('hi')", "", "a=b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            shell_words(&args),
            "python3 -c 'print('\\''hi'\\'')' '' a=b"
        );
    }

    #[test]
    fn axes_have_round_steps() {
        assert_eq!(axis_steps(1_000_000.0), (200_000.0, 5));
        assert_eq!(axis_steps(940_000.0), (200_000.0, 5));
        assert_eq!(axis_steps(3.0), (1.0, 3));
        let (step, count) = byte_axis_steps(65.0 * 1024.0 * 1024.0);
        assert_eq!(step, 16.0 * 1024.0 * 1024.0);
        assert_eq!(count, 5);
        assert_eq!(human_duration(999), "999 µs");
        assert_eq!(human_duration(1_500), "1.5 ms");
        assert_eq!(human_duration(2_345_678), "2.35 s");
    }
}
