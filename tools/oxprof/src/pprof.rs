//! Writes the pprof profile: the `perftools.profiles.Profile` protobuf message that
//! `go tool pprof` reads, gzipped.
//!
//! The schema is small and fixed, so the encoder is written here (a varint, a key, a
//! length-delimited field) instead of generating code with prost, which would need a
//! protoc binary or a build script. Field numbers are those of pprof's `profile.proto`.
//!
//! Layout of the message built here: four sample types (alloc_objects/count,
//! alloc_space/bytes, inuse_objects/count, inuse_space/bytes), one sample per raw stack
//! with its four estimates, one location per distinct return address (address = pc - 1,
//! the call instruction, as pprof's own converters store it), one line per frame at that
//! address (innermost inlined frame first, as pprof orders them), one function per
//! distinct (name, system name, file), and one mapping per executable mapping of the
//! process, the main executable's first (pprof takes mapping 1 as the main binary).

use std::collections::HashMap;
use std::io::Write;

use crate::convert::Converted;
use crate::symbolize::Symbolizer;

/// Wire types.
const VARINT: u64 = 0;
const LENGTH_DELIMITED: u64 = 2;

/// Field numbers of `perftools.profiles.Profile` and its messages.
mod field {
    pub const PROFILE_SAMPLE_TYPE: u64 = 1;
    pub const PROFILE_SAMPLE: u64 = 2;
    pub const PROFILE_MAPPING: u64 = 3;
    pub const PROFILE_LOCATION: u64 = 4;
    pub const PROFILE_FUNCTION: u64 = 5;
    pub const PROFILE_STRING_TABLE: u64 = 6;
    pub const PROFILE_TIME_NANOS: u64 = 9;
    pub const PROFILE_PERIOD_TYPE: u64 = 11;
    pub const PROFILE_PERIOD: u64 = 12;
    pub const PROFILE_COMMENT: u64 = 13;
    pub const PROFILE_DEFAULT_SAMPLE_TYPE: u64 = 14;

    pub const VALUE_TYPE_TYPE: u64 = 1;
    pub const VALUE_TYPE_UNIT: u64 = 2;

    pub const SAMPLE_LOCATION_ID: u64 = 1;
    pub const SAMPLE_VALUE: u64 = 2;

    pub const MAPPING_ID: u64 = 1;
    pub const MAPPING_MEMORY_START: u64 = 2;
    pub const MAPPING_MEMORY_LIMIT: u64 = 3;
    pub const MAPPING_FILE_OFFSET: u64 = 4;
    pub const MAPPING_FILENAME: u64 = 5;
    pub const MAPPING_BUILD_ID: u64 = 6;
    pub const MAPPING_HAS_FUNCTIONS: u64 = 7;
    pub const MAPPING_HAS_FILENAMES: u64 = 8;
    pub const MAPPING_HAS_LINE_NUMBERS: u64 = 9;
    pub const MAPPING_HAS_INLINE_FRAMES: u64 = 10;

    pub const LOCATION_ID: u64 = 1;
    pub const LOCATION_MAPPING_ID: u64 = 2;
    pub const LOCATION_ADDRESS: u64 = 3;
    pub const LOCATION_LINE: u64 = 4;

    pub const LINE_FUNCTION_ID: u64 = 1;
    pub const LINE_LINE: u64 = 2;

    pub const FUNCTION_ID: u64 = 1;
    pub const FUNCTION_NAME: u64 = 2;
    pub const FUNCTION_SYSTEM_NAME: u64 = 3;
    pub const FUNCTION_FILENAME: u64 = 4;
}

/// The sample types, in the order of each sample's values.
pub const SAMPLE_TYPES: [(&str, &str); 4] = [
    ("alloc_objects", "count"),
    ("alloc_space", "bytes"),
    ("inuse_objects", "count"),
    ("inuse_space", "bytes"),
];
/// Index into `SAMPLE_TYPES` of the type pprof shows first.
const DEFAULT_SAMPLE_TYPE: usize = 3;

/// Name of the location that stands for the library's overflow stack (depth 0).
pub const OTHER_STACKS: &str = "[other stacks]";

/// Protobuf encoding primitives. Zero scalars are omitted, as proto3 does.
struct Message(Vec<u8>);

impl Message {
    fn new() -> Message {
        Message(Vec::new())
    }

    fn raw_varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.0.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.0.push(value as u8);
    }

    fn key(&mut self, field: u64, wire_type: u64) {
        self.raw_varint(field << 3 | wire_type);
    }

    fn uint(&mut self, field: u64, value: u64) {
        if value != 0 {
            self.key(field, VARINT);
            self.raw_varint(value);
        }
    }

    /// An `int64` field: negative values take ten bytes, as the format says.
    fn int(&mut self, field: u64, value: i64) {
        self.uint(field, value as u64);
    }

    fn bool(&mut self, field: u64, value: bool) {
        self.uint(field, u64::from(value));
    }

    fn bytes(&mut self, field: u64, data: &[u8]) {
        self.key(field, LENGTH_DELIMITED);
        self.raw_varint(data.len() as u64);
        self.0.extend_from_slice(data);
    }

    fn message(&mut self, field: u64, inner: Message) {
        self.bytes(field, &inner.0);
    }

    /// A packed repeated varint field.
    fn packed(&mut self, field: u64, values: impl IntoIterator<Item = u64>) {
        let mut inner = Message::new();
        for value in values {
            inner.raw_varint(value);
        }
        if !inner.0.is_empty() {
            self.message(field, inner);
        }
    }
}

/// The string table: index 0 is the empty string, as the format requires.
struct Strings {
    index: HashMap<String, i64>,
    list: Vec<String>,
}

impl Strings {
    fn new() -> Strings {
        let mut strings = Strings {
            index: HashMap::new(),
            list: Vec::new(),
        };
        strings.intern("");
        strings
    }

    fn intern(&mut self, text: &str) -> i64 {
        if let Some(&index) = self.index.get(text) {
            return index;
        }
        let index = self.list.len() as i64;
        self.index.insert(text.to_string(), index);
        self.list.push(text.to_string());
        index
    }
}

fn value_type(strings: &mut Strings, kind: &str, unit: &str) -> Message {
    let mut message = Message::new();
    message.int(field::VALUE_TYPE_TYPE, strings.intern(kind));
    message.int(field::VALUE_TYPE_UNIT, strings.intern(unit));
    message
}

fn saturating_i64(value: u64) -> u64 {
    value.min(i64::MAX as u64)
}

/// Encodes the profile (not yet compressed).
pub fn encode(converted: &Converted<'_>, symbolizer: &mut Symbolizer) -> Vec<u8> {
    let profile = converted.profile;
    let mut strings = Strings::new();
    let mut out = Message::new();

    for (kind, unit) in SAMPLE_TYPES {
        out.message(
            field::PROFILE_SAMPLE_TYPE,
            value_type(&mut strings, kind, unit),
        );
    }

    // Mappings: the executable ones, the main program's first.
    let mut executable: Vec<usize> = (0..profile.maps.len())
        .filter(|&index| profile.maps[index].is_executable())
        .collect();
    executable.sort_by_key(|&index| profile.maps[index].file_path() != Some(&profile.exe));
    let mut mapping_ids: HashMap<usize, u64> = HashMap::new();
    for (position, &index) in executable.iter().enumerate() {
        let map = &profile.maps[index];
        let id = position as u64 + 1;
        mapping_ids.insert(index, id);
        let object = map.file_path().and_then(|path| symbolizer.object(path));
        let mut message = Message::new();
        message.uint(field::MAPPING_ID, id);
        message.uint(field::MAPPING_MEMORY_START, map.start);
        message.uint(field::MAPPING_MEMORY_LIMIT, map.end);
        message.uint(field::MAPPING_FILE_OFFSET, map.offset);
        let filename = map.file_path().unwrap_or(&map.path);
        message.int(field::MAPPING_FILENAME, strings.intern(filename));
        if let Some(build_id) = object.as_ref().and_then(|object| object.build_id.as_ref()) {
            let hex: String = build_id.iter().map(|byte| format!("{byte:02x}")).collect();
            message.int(field::MAPPING_BUILD_ID, strings.intern(&hex));
        }
        let has_symbols = object.as_ref().is_some_and(|object| object.has_symbols());
        let has_lines = object.as_ref().is_some_and(|object| object.has_lines());
        message.bool(field::MAPPING_HAS_FUNCTIONS, has_symbols);
        message.bool(field::MAPPING_HAS_FILENAMES, has_lines);
        message.bool(field::MAPPING_HAS_LINE_NUMBERS, has_lines);
        message.bool(field::MAPPING_HAS_INLINE_FRAMES, has_lines);
        out.message(field::PROFILE_MAPPING, message);
    }

    // Functions and locations, in order of first use.
    let mut function_ids: HashMap<(String, String, String), u64> = HashMap::new();
    let mut functions: Vec<Message> = Vec::new();
    let mut function_id = |strings: &mut Strings, name: &str, system_name: &str, file: &str| {
        let key = (name.to_string(), system_name.to_string(), file.to_string());
        if let Some(&id) = function_ids.get(&key) {
            return id;
        }
        let id = functions.len() as u64 + 1;
        let mut message = Message::new();
        message.uint(field::FUNCTION_ID, id);
        message.int(field::FUNCTION_NAME, strings.intern(name));
        message.int(field::FUNCTION_SYSTEM_NAME, strings.intern(system_name));
        message.int(field::FUNCTION_FILENAME, strings.intern(file));
        functions.push(message);
        function_ids.insert(key, id);
        id
    };

    let mut location_ids: HashMap<u64, u64> = HashMap::new();
    let mut locations: Vec<Message> = Vec::new();
    let mut other_stacks_location: Option<u64> = None;
    let mut samples: Vec<Message> = Vec::new();
    for stack in &profile.stacks {
        let mut ids = Vec::with_capacity(stack.pcs.len().max(1));
        for &pc in &stack.pcs {
            let next_id = locations.len() as u64 + 1;
            let id = *location_ids.entry(pc).or_insert(next_id);
            if id == next_id {
                let location = converted.location(pc);
                let mut message = Message::new();
                message.uint(field::LOCATION_ID, id);
                if let Some(mapping) = location.mapping.and_then(|index| mapping_ids.get(&index)) {
                    message.uint(field::LOCATION_MAPPING_ID, *mapping);
                }
                message.uint(field::LOCATION_ADDRESS, location.address());
                for frame in &location.frames {
                    let file = frame.file.as_deref().unwrap_or("");
                    let function =
                        function_id(&mut strings, &frame.function, &frame.system_name, file);
                    let mut line = Message::new();
                    line.uint(field::LINE_FUNCTION_ID, function);
                    line.int(field::LINE_LINE, i64::from(frame.line));
                    message.message(field::LOCATION_LINE, line);
                }
                locations.push(message);
            }
            ids.push(id);
        }
        if stack.pcs.is_empty() {
            let id = *other_stacks_location.get_or_insert_with(|| {
                let id = locations.len() as u64 + 1;
                let function = function_id(&mut strings, OTHER_STACKS, OTHER_STACKS, "");
                let mut line = Message::new();
                line.uint(field::LINE_FUNCTION_ID, function);
                let mut message = Message::new();
                message.uint(field::LOCATION_ID, id);
                message.message(field::LOCATION_LINE, line);
                locations.push(message);
                id
            });
            ids.push(id);
        }
        let mut sample = Message::new();
        sample.packed(field::SAMPLE_LOCATION_ID, ids);
        sample.packed(
            field::SAMPLE_VALUE,
            [
                stack.alloc_objects,
                stack.alloc_bytes,
                stack.inuse_objects,
                stack.inuse_bytes,
            ]
            .map(saturating_i64),
        );
        samples.push(sample);
    }
    for sample in samples {
        out.message(field::PROFILE_SAMPLE, sample);
    }
    for location in locations {
        out.message(field::PROFILE_LOCATION, location);
    }
    for function in functions {
        out.message(field::PROFILE_FUNCTION, function);
    }

    out.int(
        field::PROFILE_TIME_NANOS,
        (profile.time_secs as i64).saturating_mul(1_000_000_000),
    );
    out.message(
        field::PROFILE_PERIOD_TYPE,
        value_type(&mut strings, "space", "bytes"),
    );
    out.int(
        field::PROFILE_PERIOD,
        saturating_i64(profile.interval_bytes) as i64,
    );
    let comments = [
        format!(
            "oxmalloc heap profile of {} (pid {})",
            profile.exe, profile.pid
        ),
        format!("dump reason: {}", profile.reason),
        format!(
            "sampled every {} bytes on average; values are estimates",
            profile.interval_bytes
        ),
    ];
    let comment_ids: Vec<u64> = comments
        .iter()
        .map(|comment| strings.intern(comment) as u64)
        .collect();
    out.packed(field::PROFILE_COMMENT, comment_ids);
    let (default_kind, _) = SAMPLE_TYPES[DEFAULT_SAMPLE_TYPE];
    out.int(
        field::PROFILE_DEFAULT_SAMPLE_TYPE,
        strings.intern(default_kind),
    );

    // Last: every string has been interned by now.
    for text in &strings.list {
        out.bytes(field::PROFILE_STRING_TABLE, text.as_bytes());
    }
    out.0
}

/// `encode`, gzipped.
pub fn encode_gzipped(
    converted: &Converted<'_>,
    symbolizer: &mut Symbolizer,
) -> std::io::Result<Vec<u8>> {
    let raw = encode(converted, symbolizer);
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&raw)?;
    gzip.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_the_protobuf_examples() {
        let mut message = Message::new();
        message.raw_varint(1);
        message.raw_varint(150);
        message.raw_varint(300);
        assert_eq!(message.0, [0x01, 0x96, 0x01, 0xac, 0x02]);
        let mut negative = Message::new();
        negative.int(1, -1);
        assert_eq!(negative.0.len(), 1 + 10);
    }

    #[test]
    fn zero_scalars_are_omitted_and_strings_start_empty() {
        let mut message = Message::new();
        message.uint(1, 0);
        message.bool(2, false);
        message.packed(3, []);
        assert!(message.0.is_empty());
        let mut strings = Strings::new();
        assert_eq!(strings.intern(""), 0);
        assert_eq!(strings.intern("a"), 1);
        assert_eq!(strings.intern("a"), 1);
    }
}
