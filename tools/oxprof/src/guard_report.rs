//! `oxprof symbolize`: names the frames of a report of oxmalloc's guarded sampling
//! (`OXMALLOC_GUARD=1`).
//!
//! The report's stack lines carry the return address, the module that held it and the
//! offset in that module's file (`#3 0x55d0c3a0b1c9 (/usr/bin/prog+0x11c9)`), which is
//! all the symbolizer needs: the module stands for the process's mapping. Each such line
//! gets ` in FUNCTION at FILE:LINE` appended (and the functions inlined at that address,
//! innermost first); other lines pass through unchanged. The faulting instruction's line
//! (`by the instruction at 0x… (module+0x…)`) is looked up at its own address, not as a
//! return address.

use crate::raw::MapEntry;
use crate::symbolize::Symbolizer;

/// The address and `(module+0xoffset)` of a report line: (pc, module, offset, is a return
/// address). `None` for other lines.
fn parse_frame(line: &str) -> Option<(u64, &str, u64, bool)> {
    const INSTRUCTION: &str = "by the instruction at 0x";
    let (pc_text, return_address) = if let Some(at) = line.find(INSTRUCTION) {
        (&line[at + INSTRUCTION.len()..], false)
    } else {
        let after = &line[line.find('#')? + 1..];
        let space = after.find(" 0x")?;
        if space == 0 || !after[..space].bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        (&after[space + 3..], true)
    };
    let digits = pc_text
        .find(|c: char| !c.is_ascii_hexdigit())
        .unwrap_or(pc_text.len());
    let pc = u64::from_str_radix(&pc_text[..digits], 16).ok()?;
    let module_text = pc_text[digits..].strip_prefix(" (")?;
    let close = module_text.rfind(')')?;
    let inside = &module_text[..close];
    let plus = inside.rfind("+0x")?;
    let offset = u64::from_str_radix(&inside[plus + 3..], 16).ok()?;
    Some((pc, &inside[..plus], offset, return_address))
}

/// The report `text` with its frames named.
pub fn symbolize_report(text: &str, symbolizer: &mut Symbolizer) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for line in text.lines() {
        out.push_str(line);
        if let Some((pc, module, offset, return_address)) = parse_frame(line) {
            // A mapping that puts `module` at offset 0 where `pc` has `offset`; the
            // symbolizer looks up `pc - 1` (inside the call instruction), so an instruction
            // address is given as the next byte.
            let pc = if return_address { pc } else { pc + 1 };
            let offset = if return_address { offset } else { offset + 1 };
            let start = pc.saturating_sub(offset);
            let maps = [MapEntry {
                start,
                end: pc.saturating_add(1),
                perms: "r-xp".to_string(),
                offset: 0,
                path: module.to_string(),
            }];
            let location = symbolizer.locate(pc, &maps);
            let mut frames = location.frames.iter();
            if let Some(frame) = frames.next() {
                out.push_str(" in ");
                out.push_str(&frame.function);
                if let Some(file) = &frame.file {
                    out.push_str(&format!(" at {file}:{}", frame.line));
                }
                for inlined_into in frames {
                    out.push_str(&format!(", inlined into {}", inlined_into.function));
                }
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_found_in_report_lines() {
        assert_eq!(
            parse_frame("oxmalloc:     #12 0x55d0c3a0b1c9 (/usr/bin/my prog+0x11c9)"),
            Some((0x55d0c3a0b1c9, "/usr/bin/my prog", 0x11c9, true))
        );
        assert_eq!(
            parse_frame("oxmalloc: guard: by the instruction at 0x7f01 (/lib/x.so+0x201)"),
            Some((0x7f01, "/lib/x.so", 0x201, false))
        );
        assert_eq!(parse_frame("oxmalloc:     #0 0x7f01 (?)"), None);
        assert_eq!(
            parse_frame("oxmalloc: guard: use after free: read at 0x7f, offset 4"),
            None
        );
        assert_eq!(parse_frame("a #b 0x12 (/x+0x1)"), None);
    }

    #[test]
    fn other_lines_pass_through() {
        let mut symbolizer = Symbolizer::new();
        let text = "oxmalloc: guard: use after free: read at 0x10\nplain\n";
        assert_eq!(symbolize_report(text, &mut symbolizer), text);
    }
}
