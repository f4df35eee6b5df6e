//! Helpers shared by oxprof's integration tests: running the tool, a protobuf decoder
//! for the pprof output (written independently of the tool's encoder, from the wire
//! format and pprof's `profile.proto`), and an XML well-formedness check.

#![allow(dead_code)] // each test file uses its own part

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A fresh empty folder for one test.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("oxprof-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn oxprof(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oxprof"))
        .args(args)
        .output()
        .expect("oxprof runs")
}

/// Runs `oxprof convert`, which must succeed.
pub fn convert(raw: &Path, out_dir: &Path) {
    let output = oxprof(&[
        "convert",
        "--out",
        out_dir.to_str().unwrap(),
        raw.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "oxprof failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---- protobuf wire format ----

#[derive(Debug, Clone)]
pub enum Value {
    Varint(u64),
    Bytes(Vec<u8>),
}

fn read_varint(data: &mut &[u8]) -> u64 {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = data.split_first().expect("varint cut short");
        *data = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return value;
        }
    }
    panic!("varint longer than 10 bytes");
}

/// The fields of one message, in order.
pub fn fields(mut data: &[u8]) -> Vec<(u64, Value)> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let key = read_varint(&mut data);
        let value = match key & 7 {
            0 => Value::Varint(read_varint(&mut data)),
            2 => {
                let len = read_varint(&mut data) as usize;
                assert!(
                    len <= data.len(),
                    "length-delimited field runs past the end"
                );
                let (bytes, rest) = data.split_at(len);
                data = rest;
                Value::Bytes(bytes.to_vec())
            }
            1 => {
                let (bytes, rest) = data.split_at(8);
                data = rest;
                Value::Varint(u64::from_le_bytes(bytes.try_into().unwrap()))
            }
            other => panic!("unexpected wire type {other}"),
        };
        out.push((key >> 3, value));
    }
    out
}

fn varint_of(fields: &[(u64, Value)], number: u64) -> u64 {
    fields
        .iter()
        .rev()
        .find_map(|(n, v)| match v {
            Value::Varint(x) if *n == number => Some(*x),
            _ => None,
        })
        .unwrap_or(0)
}

/// A repeated varint field, packed or not.
fn repeated(fields: &[(u64, Value)], number: u64) -> Vec<u64> {
    let mut out = Vec::new();
    for (n, v) in fields {
        if *n != number {
            continue;
        }
        match v {
            Value::Varint(x) => out.push(*x),
            Value::Bytes(bytes) => {
                let mut data = &bytes[..];
                while !data.is_empty() {
                    out.push(read_varint(&mut data));
                }
            }
        }
    }
    out
}

fn messages(fields: &[(u64, Value)], number: u64) -> Vec<Vec<(u64, Value)>> {
    fields
        .iter()
        .filter(|(n, _)| *n == number)
        .map(|(_, v)| match v {
            Value::Bytes(bytes) => self::fields(bytes),
            Value::Varint(_) => panic!("field {number} should be a message"),
        })
        .collect()
}

// ---- perftools.profiles.Profile ----

#[derive(Debug)]
pub struct Sample {
    pub location_ids: Vec<u64>,
    pub values: Vec<i64>,
}

#[derive(Debug)]
pub struct Mapping {
    pub id: u64,
    pub start: u64,
    pub limit: u64,
    pub offset: u64,
    pub filename: String,
    pub build_id: String,
    pub has_functions: bool,
    pub has_line_numbers: bool,
}

#[derive(Debug)]
pub struct Location {
    pub id: u64,
    pub mapping_id: u64,
    pub address: u64,
    /// (function id, line), innermost first.
    pub lines: Vec<(u64, i64)>,
}

#[derive(Debug)]
pub struct Function {
    pub id: u64,
    pub name: String,
    pub system_name: String,
    pub filename: String,
}

#[derive(Debug)]
pub struct Profile {
    pub sample_types: Vec<(String, String)>,
    pub samples: Vec<Sample>,
    pub mappings: Vec<Mapping>,
    pub locations: Vec<Location>,
    pub functions: Vec<Function>,
    pub strings: Vec<String>,
    pub time_nanos: i64,
    pub period_type: (String, String),
    pub period: i64,
    pub comments: Vec<String>,
    pub default_sample_type: String,
}

/// Reads a gzipped pprof file and checks that every id it uses is defined.
pub fn read_profile(path: &Path) -> Profile {
    let gz = std::fs::read(path).unwrap();
    let mut data = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut data)
        .expect("valid gzip");
    let top = fields(&data);
    let strings: Vec<String> = top
        .iter()
        .filter(|(n, _)| *n == 6)
        .map(|(_, v)| match v {
            Value::Bytes(bytes) => String::from_utf8(bytes.clone()).expect("UTF-8 string"),
            Value::Varint(_) => panic!("string_table entries are strings"),
        })
        .collect();
    assert_eq!(
        strings.first().map(String::as_str),
        Some(""),
        "string 0 must be empty"
    );
    let string = |index: u64| -> String {
        strings
            .get(index as usize)
            .unwrap_or_else(|| panic!("string index {index} out of range"))
            .clone()
    };
    let value_type = |m: &[(u64, Value)]| (string(varint_of(m, 1)), string(varint_of(m, 2)));

    let profile = Profile {
        sample_types: messages(&top, 1).iter().map(|m| value_type(m)).collect(),
        samples: messages(&top, 2)
            .iter()
            .map(|m| Sample {
                location_ids: repeated(m, 1),
                values: repeated(m, 2).into_iter().map(|v| v as i64).collect(),
            })
            .collect(),
        mappings: messages(&top, 3)
            .iter()
            .map(|m| Mapping {
                id: varint_of(m, 1),
                start: varint_of(m, 2),
                limit: varint_of(m, 3),
                offset: varint_of(m, 4),
                filename: string(varint_of(m, 5)),
                build_id: string(varint_of(m, 6)),
                has_functions: varint_of(m, 7) != 0,
                has_line_numbers: varint_of(m, 9) != 0,
            })
            .collect(),
        locations: messages(&top, 4)
            .iter()
            .map(|m| Location {
                id: varint_of(m, 1),
                mapping_id: varint_of(m, 2),
                address: varint_of(m, 3),
                lines: messages(m, 4)
                    .iter()
                    .map(|line| (varint_of(line, 1), varint_of(line, 2) as i64))
                    .collect(),
            })
            .collect(),
        functions: messages(&top, 5)
            .iter()
            .map(|m| Function {
                id: varint_of(m, 1),
                name: string(varint_of(m, 2)),
                system_name: string(varint_of(m, 3)),
                filename: string(varint_of(m, 4)),
            })
            .collect(),
        time_nanos: varint_of(&top, 9) as i64,
        period_type: messages(&top, 11)
            .first()
            .map(|m| value_type(m))
            .unwrap_or_default(),
        period: varint_of(&top, 12) as i64,
        comments: repeated(&top, 13).into_iter().map(string).collect(),
        default_sample_type: string(varint_of(&top, 14)),
        strings: strings.clone(),
    };

    // Referential integrity, as pprof checks it.
    let unique = |ids: Vec<u64>, what: &str| -> HashSet<u64> {
        let set: HashSet<u64> = ids.iter().copied().collect();
        assert_eq!(set.len(), ids.len(), "duplicate {what} ids");
        assert!(!set.contains(&0), "{what} id 0");
        set
    };
    let mapping_ids = unique(profile.mappings.iter().map(|m| m.id).collect(), "mapping");
    let location_ids = unique(profile.locations.iter().map(|l| l.id).collect(), "location");
    let function_ids = unique(profile.functions.iter().map(|f| f.id).collect(), "function");
    for location in &profile.locations {
        assert!(location.mapping_id == 0 || mapping_ids.contains(&location.mapping_id));
        for (function, _) in &location.lines {
            assert!(
                function_ids.contains(function),
                "line names function {function}"
            );
        }
    }
    for sample in &profile.samples {
        assert_eq!(sample.values.len(), profile.sample_types.len());
        assert!(
            !sample.location_ids.is_empty(),
            "a sample without locations"
        );
        for id in &sample.location_ids {
            assert!(location_ids.contains(id), "sample names location {id}");
        }
    }
    profile
}

impl Profile {
    pub fn location(&self, id: u64) -> &Location {
        self.locations.iter().find(|l| l.id == id).unwrap()
    }

    pub fn function(&self, id: u64) -> &Function {
        self.functions.iter().find(|f| f.id == id).unwrap()
    }

    /// Function names at a location, innermost first.
    pub fn names_at(&self, location_id: u64) -> Vec<String> {
        self.location(location_id)
            .lines
            .iter()
            .map(|(function, _)| self.function(*function).name.clone())
            .collect()
    }

    /// Sum of each sample type over all samples.
    pub fn totals(&self) -> Vec<i64> {
        let mut totals = vec![0; self.sample_types.len()];
        for sample in &self.samples {
            for (total, value) in totals.iter_mut().zip(&sample.values) {
                *total += value;
            }
        }
        totals
    }

    pub fn location_by_address(&self) -> HashMap<u64, &Location> {
        self.locations.iter().map(|l| (l.address, l)).collect()
    }
}

/// The sample types every oxprof profile has, in order.
pub fn expected_sample_types() -> Vec<(String, String)> {
    [
        ("alloc_objects", "count"),
        ("alloc_space", "bytes"),
        ("inuse_objects", "count"),
        ("inuse_space", "bytes"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect()
}

// ---- XML ----

/// Parses the whole document with quick-xml (which inferno itself writes with, so it is
/// already built), failing on any syntax error or mismatched end tag. Returns the text
/// of every `<title>` element (inferno puts each frame's name and count there).
pub fn xml_titles(path: &Path) -> Vec<String> {
    use quick_xml::events::Event;
    let text = std::fs::read_to_string(path).unwrap();
    let mut reader = quick_xml::Reader::from_str(&text);
    reader.config_mut().check_end_names = true;
    let mut depth = 0usize;
    let mut title: Option<String> = None;
    let mut titles = Vec::new();
    let mut roots = 0;
    loop {
        match reader.read_event() {
            Ok(Event::Start(start)) => {
                if depth == 0 {
                    roots += 1;
                    assert_eq!(start.name().as_ref(), b"svg", "root element");
                }
                depth += 1;
                if start.name().as_ref() == b"title" {
                    title = Some(String::new());
                }
            }
            Ok(Event::End(_)) => {
                depth = depth.checked_sub(1).expect("end tag without start");
                titles.extend(title.take());
            }
            Ok(Event::Text(text)) => {
                if let Some(title) = &mut title {
                    title.push_str(&text.decode().unwrap());
                }
            }
            Ok(Event::GeneralRef(reference)) => {
                let decoded = match reference.decode().unwrap().as_ref() {
                    "lt" => "<".to_string(),
                    "gt" => ">".to_string(),
                    "amp" => "&".to_string(),
                    "quot" => "\"".to_string(),
                    "apos" => "'".to_string(),
                    other => format!("&{other};"),
                };
                if let Some(title) = &mut title {
                    title.push_str(&decoded);
                }
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(error) => panic!(
                "{} is not well-formed XML at byte {}: {error}",
                path.display(),
                reader.error_position()
            ),
        }
    }
    assert_eq!(depth, 0, "unclosed elements");
    assert_eq!(roots, 1, "one root element");
    titles
}
