//! The report end to end: programs run with `scripts/oxrun --profile DIR` (the library
//! built in release, profiling at the default interval), the pages and files that
//! `oxprof` writes from what the library recorded, and the pages opened in a headless
//! Chromium (`chromium`, Debian's package), which runs the page's own self-test.
//!
//! Each test says why it skips: no C compiler, no `python3`, no `chromium`.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

use support::*;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// `scripts/oxrun` builds the library and the tool on first use: one run at a time.
static OXRUN: Mutex<()> = Mutex::new(());

fn have(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `scripts/oxrun --profile DIR ARGS...` with `env`; the run must succeed.
fn oxrun_profile(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let _one = OXRUN.lock().unwrap_or_else(|e| e.into_inner());
    let mut command = Command::new(format!("{ROOT}/scripts/oxrun"));
    command.arg("--profile").arg(dir).args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    // The run's own profiling options only.
    for (name, _) in std::env::vars() {
        if name.starts_with("OXMALLOC_") {
            command.env_remove(name);
        }
    }
    let output = command.output().expect("scripts/oxrun runs");
    assert!(
        output.status.success(),
        "oxrun failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The page oxrun said to open.
fn page_to_open(output: &Output) -> PathBuf {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find_map(|line| line.strip_prefix("oxprof: open "))
        .unwrap_or_else(|| panic!("oxrun named no page to open: {stderr}"));
    let path = line.split(" (").next().unwrap();
    PathBuf::from(path)
}

/// `X.html` → `X.<view>.folded`, read into (stack, bytes) lines.
fn folded(page: &Path, view: &str) -> Vec<(String, u64)> {
    let base = page.to_str().unwrap().strip_suffix(".html").unwrap();
    std::fs::read_to_string(format!("{base}.{view}.folded"))
        .unwrap()
        .lines()
        .map(|line| {
            let (stack, bytes) = line.rsplit_once(' ').unwrap();
            (stack.to_string(), bytes.parse().unwrap())
        })
        .collect()
}

/// Bytes of the stacks that pass through a frame for which `pick` is true.
fn bytes_through(lines: &[(String, u64)], pick: impl Fn(&str) -> bool) -> u64 {
    lines
        .iter()
        .filter(|(stack, _)| stack.split(';').any(&pick))
        .map(|(_, bytes)| bytes)
        .sum()
}

/// The chart's SVG must be well-formed XML.
fn check_chart_is_xml(page: &str, dir: &Path) {
    let start = page.find("<svg class=\"chart\"").expect("a chart");
    let end = page[start..].find("</svg>").unwrap() + start + "</svg>".len();
    let svg = dir.join("chart.svg");
    std::fs::write(&svg, page[start..end].replace(" role=\"img\"", "")).unwrap();
    xml_titles(&svg);
}

// ---- the headless browser ----

fn chromium() -> Option<&'static str> {
    static FOUND: OnceLock<Option<&'static str>> = OnceLock::new();
    *FOUND.get_or_init(|| {
        ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|path| Path::new(path).is_file())
    })
}

/// What the page's self-test wrote: its lines, unescaped.
fn selftest(page: &Path) -> Vec<String> {
    let browser = chromium().expect("checked by the caller");
    let profile_dir = page.parent().unwrap().join("chromium-profile");
    let output = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--window-size=1400,1000",
        ])
        .arg(format!("--user-data-dir={}", profile_dir.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}#selftest", page.display()))
        .output()
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&output.stdout);
    let start = dom.find("<pre id=\"selftest\">").unwrap_or_else(|| {
        panic!(
            "the self-test did not run; chromium said: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let text = &dom[start + "<pre id=\"selftest\">".len()..];
    let text = &text[..text.find("</pre>").unwrap()];
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
        .lines()
        .map(str::to_string)
        .collect()
}

/// `key=value` fields of the self-test line that starts with `prefix`.
fn fields_of(lines: &[String], prefix: &str) -> HashMap<String, String> {
    let line = lines
        .iter()
        .find(|line| line.starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in {lines:#?}"));
    line.split(' ')
        .filter_map(|field| field.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn number(fields: &HashMap<String, String>, key: &str) -> f64 {
    fields[key].parse().unwrap()
}

/// The page loads without errors, the chart is drawn with the peak, each listed view
/// draws frames, and a click on a frame zooms to it. Returns the frame names per view.
fn check_page_in_browser(page: &Path, views: &[&str]) -> HashMap<String, Vec<String>> {
    let lines = selftest(page);
    assert!(lines.iter().any(|l| l == "errors none"), "{lines:#?}");
    assert!(lines.iter().any(|l| l == "selftest done"), "{lines:#?}");
    let chart = fields_of(&lines, "chart ");
    assert!(number(&chart, "width") > 500.0, "{chart:?}");
    assert!(number(&chart, "live_points") >= 2.0, "{chart:?}");
    assert!(number(&chart, "resident_points") >= 1.0, "{chart:?}");
    assert_eq!(chart["peak_marker"], "yes");
    let mut names = HashMap::new();
    for view in views {
        let drawn = fields_of(&lines, &format!("view {view} "));
        assert_eq!(drawn["shown"], "true", "the tab shows its view");
        assert!(number(&drawn, "frames") >= 3.0, "{drawn:?}");
        let zoom = fields_of(&lines, &format!("zoom {view} "));
        let (before, after) = (number(&zoom, "before"), number(&zoom, "after"));
        assert!(
            before < 0.97,
            "the frame clicked was not the whole width: {zoom:?}"
        );
        assert!(after > 0.98, "the frame clicked fills the graph: {zoom:?}");
        assert_eq!(
            zoom["outside"], "0",
            "only its callers and callees stay: {zoom:?}"
        );
        let prefix = format!("frame {view} ");
        names.insert(
            view.to_string(),
            lines
                .iter()
                .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
                .collect(),
        );
    }
    names
}

macro_rules! skip_unless {
    ($cond:expr, $why:expr) => {
        if !$cond {
            eprintln!("skipped: {}", $why);
            return;
        }
    };
}

// ---- the tests ----

#[test]
fn three_functions_get_their_share_of_the_allocations() {
    skip_unless!(have("cc", "--version"), "no C compiler (`cc`)");
    let dir = scratch_dir("shares");
    let program = dir.join("shares");
    assert!(Command::new("cc")
        .args(["-O1", "-g", "-o"])
        .arg(&program)
        .arg(format!("{FIXTURES}/shares.c"))
        .status()
        .unwrap()
        .success());
    let out = dir.join("profile");
    // Through a shell: `sh` and `true` are processes of the run too, too small to draw.
    let script = format!("{}; /bin/true", program.display());
    let output = oxrun_profile(&out, &["sh", "-c", &script], &[]);
    let page = page_to_open(&output);
    assert!(
        page.to_str().unwrap().ends_with(".exit.html") && page.is_file(),
        "{page:?}"
    );

    let lines = folded(&page, "alloc");
    let shares: Vec<f64> = ["alloc_sixty", "alloc_thirty", "alloc_ten"]
        .iter()
        .map(|f| bytes_through(&lines, |frame| frame == *f) as f64)
        .collect();
    let total: f64 = shares.iter().sum();
    // The estimate of N bytes sampled every T bytes on average has a standard deviation
    // near sqrt(N * T): at the default T = 512 KiB and N = 4 GB, 1.15% of the total
    // (measured: 1.05% over 40 runs), and near 0.56 points for the 60% share. 3 points is
    // more than 5 of those for the shares; the total gets 6% (at 3%, under 3 standard
    // deviations, it failed about once in 300 runs).
    for (share, expected) in shares.iter().zip([60.0, 30.0, 10.0]) {
        let percent = share * 100.0 / total;
        assert!(
            (percent - expected).abs() < 3.0,
            "{expected}% function estimated at {percent:.1}%: {lines:?}"
        );
    }
    // The total is the 4 GB allocated, within 6%.
    assert!((total / 4e9 - 1.0).abs() < 0.06, "{total}");
    // Every block was freed: no leaks; the page says so.
    assert!(folded(&page, "live").is_empty());
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("No leaks"));
    check_chart_is_xml(&html, &dir);

    // The index lists the three processes, the program first; the shells are too small
    // to draw and get no files of their own.
    let index = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(
        index.contains("Heap profiles of 2 processes")
            || index.contains("Heap profiles of 3 processes"),
        "{index}"
    );
    let first_row = index.split("<tr").nth(2).unwrap();
    assert!(first_row.contains("<code>shares</code>"), "{first_row}");
    assert!(first_row.contains(&format!(
        "href=\"{}\"",
        page.file_name().unwrap().to_str().unwrap()
    )));
    assert!(index.contains("too small"));
    let pages = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "html")
        })
        .count();
    assert_eq!(pages, 2, "the program's page and the index");

    skip_unless!(chromium().is_some(), "no `chromium` for the browser checks");
    let names = check_page_in_browser(&page, &["peak", "alloc"]);
    for f in [
        "alloc_sixty",
        "alloc_thirty",
        "alloc_ten",
        "allocate",
        "main",
    ] {
        assert!(
            names["alloc"].contains(&f.to_string()),
            "{f} not drawn: {names:?}"
        );
    }
}

const DICT_PROGRAM: &str = "\
import json
d = {}
for i in range(200000):
    d['key-%d' % i] = 'value number %d of the table' % i
text = json.dumps(d)
print(len(text))
";

#[test]
fn python_dict_peak_allocations_and_no_leaks() {
    skip_unless!(have("python3", "--version"), "no `python3`");
    let dir = scratch_dir("python");
    let app = dir.join("app.py");
    std::fs::write(&app, DICT_PROGRAM).unwrap();
    let out = dir.join("profile");
    let output = oxrun_profile(
        &out,
        &["python3", app.to_str().unwrap()],
        &[("PYTHONMALLOC", "malloc")],
    );
    assert!(
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse::<u64>()
            .unwrap()
            > 6_000_000
    );
    let page = page_to_open(&output);
    let program = page_program(&page);
    assert!(
        program.starts_with("python"),
        "the biggest process is {program}"
    );

    let peak = folded(&page, "peak");
    let alloc = folded(&page, "alloc");
    let symbols = alloc
        .iter()
        .any(|(stack, _)| stack.contains("PyUnicode_New"));
    skip_unless!(
        symbols,
        "python3 has no symbols here: frames cannot be named"
    );
    let peak_total: u64 = peak.iter().map(|(_, b)| b).sum();
    // At the peak: the strings (str objects: PyUnicode_New, from the % formatting) and
    // the dict's table (new_keys_object, as the dict grows), most of the live heap.
    let strings = bytes_through(&peak, |f| {
        f == "PyUnicode_New" || f.starts_with("PyUnicode_Format")
    });
    let table = bytes_through(&peak, |f| f == "new_keys_object" || f == "dictresize");
    assert!(
        strings as f64 > 0.3 * peak_total as f64,
        "strings {strings} of {peak_total}"
    );
    assert!(
        table as f64 > 0.05 * peak_total as f64,
        "table {table} of {peak_total}"
    );
    // The live heap at its peak holds the 200,000 keys and values: tens of MB.
    assert!(peak_total > 20 << 20, "{peak_total}");
    // Allocations: the JSON encoder's.
    let encoder = bytes_through(&alloc, |f| f.starts_with("encoder_") || f.contains("_json"));
    let alloc_total: u64 = alloc.iter().map(|(_, b)| b).sum();
    assert!(
        encoder as f64 > 0.1 * alloc_total as f64,
        "encoder {encoder} of {alloc_total}"
    );
    // And the dict and the JSON text are not left at exit: no leaked stack goes through
    // the code that built them, and what is live at exit is small beside the peak.
    // Python itself keeps some memory to the end (modules, interned strings, the
    // loader's objects for the extension modules it opened), and a sample lands in it
    // now and then (about one run in four), so the leak view is not always empty.
    let live = folded(&page, "live");
    let ours = |f: &str| {
        ["PyUnicode_Format", "dictresize", "new_keys_object"].contains(&f)
            || f.starts_with("encoder_")
    };
    assert!(bytes_through(&live, ours) == 0, "{live:?}");
    let live_total: u64 = live.iter().map(|(_, b)| b).sum();
    assert!(
        (live_total as f64) < 0.1 * peak_total as f64,
        "{live_total} live at exit, peak {peak_total}"
    );
    if live.is_empty() {
        assert!(std::fs::read_to_string(&page).unwrap().contains("No leaks"));
    }

    skip_unless!(chromium().is_some(), "no `chromium` for the browser checks");
    let names = check_page_in_browser(&page, &["peak", "alloc"]);
    for f in ["PyUnicode_New", "new_keys_object"] {
        assert!(
            names["peak"].contains(&f.to_string()),
            "{f} not drawn in the peak view"
        );
    }
    assert!(names["alloc"].iter().any(|n| n.starts_with("encoder_")));
}

/// The program named in a page's title.
fn page_program(page: &Path) -> String {
    let html = std::fs::read_to_string(page).unwrap();
    let start = html.find("<title>Heap profile: ").unwrap() + "<title>Heap profile: ".len();
    html[start..].split(" (pid").next().unwrap().to_string()
}
