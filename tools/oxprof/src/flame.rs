//! The flame graph of live bytes (`X.svg`), drawn by inferno from the collapsed stacks.
//!
//! The SVG carries its own script (search, zoom on click), so it opens in any browser
//! with nothing else installed. Colours come from the name of each frame (inferno's
//! `hash` mode), so the same function has the same colour in every dump.

use inferno::flamegraph::color::{BasicPalette, Palette};
use inferno::flamegraph::{self, Options};

use crate::convert::Converted;
use crate::report::{folded_lines, human_bytes, utc_time};

/// Escapes text for an SVG built by hand.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn svg(converted: &Converted<'_>) -> Vec<u8> {
    let profile = converted.profile;
    let lines = folded_lines(converted);
    let total: u64 = lines.iter().map(|(_, bytes)| bytes).sum();
    let program = profile.exe.rsplit('/').next().unwrap_or(&profile.exe);
    let title = format!("Live heap of {program}: {}", human_bytes(total));
    let subtitle = format!(
        "pid {}, dump reason `{}`, {}; estimated from blocks sampled every {} bytes",
        profile.pid,
        profile.reason,
        utc_time(profile.time_secs),
        profile.interval_bytes
    );

    if lines.is_empty() {
        // inferno refuses an empty graph; say so in a picture of the same size.
        return format!(
            "<?xml version=\"1.0\" standalone=\"no\"?>\n\
             <svg version=\"1.1\" width=\"1200\" height=\"120\" xmlns=\"http://www.w3.org/2000/svg\">\n\
             <rect x=\"0\" y=\"0\" width=\"100%\" height=\"100%\" fill=\"#eeeeee\"/>\n\
             <text x=\"600\" y=\"40\" text-anchor=\"middle\" font-family=\"Verdana\" font-size=\"17\">{}</text>\n\
             <text x=\"600\" y=\"70\" text-anchor=\"middle\" font-family=\"Verdana\" font-size=\"12\">{}</text>\n\
             <text x=\"600\" y=\"100\" text-anchor=\"middle\" font-family=\"Verdana\" font-size=\"12\">No live sampled blocks in this dump.</text>\n\
             </svg>\n",
            escape(&title),
            escape(&subtitle)
        )
        .into_bytes();
    }

    let mut options = Options::default();
    options.title = title;
    options.subtitle = Some(subtitle);
    options.count_name = "bytes".to_string();
    options.name_type = "Function:".to_string();
    options.colors = Palette::Basic(BasicPalette::Mem);
    options.hash = true;
    options.deterministic = true;
    let folded: Vec<String> = lines
        .iter()
        .map(|(stack, bytes)| format!("{stack} {bytes}"))
        .collect();
    let mut out = Vec::new();
    if let Err(error) =
        flamegraph::from_lines(&mut options, folded.iter().map(String::as_str), &mut out)
    {
        // Only an empty input makes inferno fail, and that case is handled above.
        eprintln!("oxprof: flame graph: {error}");
    }
    out
}
