//! Turns the return addresses of a profile into function names and source lines.
//!
//! An address goes through three steps: the process's maps give the mapping that holds
//! it and so the ELF file and the file offset; the file's `PT_LOAD` program headers turn
//! the file offset into an address as the file itself counts them (its "stated virtual
//! memory address", the one symbol tables and DWARF use, whatever ASLR did); then DWARF
//! (through `addr2line`) gives the function, file and line, with one frame per inlined
//! call, and the ELF symbol table gives the function name when DWARF is missing.
//!
//! Debug information is looked for in the file itself, then in a separate debug file:
//! `/usr/lib/debug/.build-id/xx/yyyy.debug` by the file's build id, then the
//! `.gnu_debuglink` name beside the file, in its `.debug/` folder and under
//! `/usr/lib/debug/` (checked against the link's CRC). A debug file compressed with dwz
//! points at a shared supplementary file through `.gnu_debugaltlink`; it is loaded too.
//!
//! Each file is read once per run and kept to the end of the run, so converting many
//! dumps of one program reads its libraries once. The bytes of a file are deliberately
//! never freed (`keep`): the DWARF reader borrows them for as long as the file is
//! cached, which is the whole run, and borrowing saves a copy of every debug section.
//! Files that cannot be read leave their addresses unknown, with one note on stderr per
//! file.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, SymbolKind};

use crate::raw::MapEntry;

/// Where distributions install separate debug files.
const DEBUG_ROOT: &str = "/usr/lib/debug";

type Reader = gimli::EndianSlice<'static, gimli::RunTimeEndian>;

/// One function frame at an address. An address inside inlined code has several.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Frame {
    /// Demangled name, as people read it.
    pub function: String,
    /// The name as the binary spells it (mangled for C++ and Rust).
    pub system_name: String,
    pub file: Option<String>,
    /// 0 when unknown.
    pub line: u32,
}

/// What is known about one return address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The return address as the profile recorded it.
    pub pc: u64,
    /// Index into the profile's maps of the mapping that holds `pc - 1`.
    pub mapping: Option<usize>,
    /// Innermost (most deeply inlined) first; empty when nothing is known.
    pub frames: Vec<Frame>,
}

impl Location {
    /// The address of the call instruction's last byte, the one that is looked up: a
    /// return address may already belong to the next line or even the next function.
    pub fn address(&self) -> u64 {
        self.pc.saturating_sub(1)
    }

    /// Names for this address, outermost first, as stack frames are written root first:
    /// the function names, or `0x… (object)` when unknown.
    pub fn names_root_first(&self, maps: &[MapEntry]) -> Vec<String> {
        if self.frames.is_empty() {
            return vec![self.unknown_name(maps)];
        }
        self.frames
            .iter()
            .rev()
            .map(|frame| frame.function.clone())
            .collect()
    }

    /// How an address without a symbol is written.
    pub fn unknown_name(&self, maps: &[MapEntry]) -> String {
        match self.mapping.and_then(|index| maps.get(index)) {
            Some(map) if !map.short_name().is_empty() => {
                format!("{:#x} ({})", self.pc, map.short_name())
            }
            _ => format!("{:#x}", self.pc),
        }
    }
}

/// A function symbol of an ELF symbol table.
#[derive(Debug, Clone)]
struct Symbol {
    address: u64,
    /// 0 when the table does not say (hand-written assembly).
    size: u64,
    name: String,
}

/// A `PT_LOAD` segment: where a run of file bytes lands in the file's address space.
#[derive(Debug, Clone, Copy)]
struct LoadSegment {
    file_offset: u64,
    file_size: u64,
    address: u64,
}

/// What oxprof keeps of one ELF file.
pub struct ElfObject {
    pub build_id: Option<Vec<u8>>,
    loads: Vec<LoadSegment>,
    /// Sorted by address.
    symbols: Vec<Symbol>,
    dwarf: Option<addr2line::Context<Reader>>,
}

impl ElfObject {
    /// Reads `path` and whatever debug files belong to it.
    pub fn load(path: &Path) -> Result<ElfObject, String> {
        let data = keep(std::fs::read(path).map_err(|e| e.to_string())?);
        let file = object::File::parse(data).map_err(|e| e.to_string())?;
        let build_id = file.build_id().ok().flatten().map(<[u8]>::to_vec);
        let loads = file
            .segments()
            .map(|segment| {
                let (file_offset, file_size) = segment.file_range();
                LoadSegment {
                    file_offset,
                    file_size,
                    address: segment.address(),
                }
            })
            .collect();

        let own_symbols = function_symbols(file.symbols());
        let has_dwarf = has_section(&file, ".debug_info");
        let debug = if has_dwarf && !own_symbols.is_empty() {
            None
        } else {
            find_debug_file(path, &file, build_id.as_deref())
        };
        let debug_file = debug
            .as_ref()
            .and_then(|(_, data)| object::File::parse(*data).ok());

        let mut symbols = own_symbols;
        if symbols.is_empty() {
            if let Some(debug_file) = &debug_file {
                symbols = function_symbols(debug_file.symbols());
            }
        }
        if symbols.is_empty() {
            symbols = function_symbols(file.dynamic_symbols());
        }

        let dwarf = if has_dwarf {
            load_dwarf(&file, path)
        } else {
            match (&debug, &debug_file) {
                (Some((debug_path, _)), Some(debug_file)) => load_dwarf(debug_file, debug_path),
                _ => None,
            }
        };

        Ok(ElfObject {
            build_id,
            loads,
            symbols,
            dwarf,
        })
    }

    /// Whether names (and lines) can be given for this file.
    pub fn has_symbols(&self) -> bool {
        !self.symbols.is_empty() || self.dwarf.is_some()
    }

    pub fn has_lines(&self) -> bool {
        self.dwarf.is_some()
    }

    /// The file's own address for a file offset, through the `PT_LOAD` segments.
    fn address_of_file_offset(&self, file_offset: u64) -> Option<u64> {
        self.loads
            .iter()
            .find(|load| {
                load.file_offset <= file_offset && file_offset - load.file_offset < load.file_size
            })
            .map(|load| load.address + (file_offset - load.file_offset))
    }

    fn symbol_at(&self, address: u64) -> Option<&Symbol> {
        let after = self
            .symbols
            .partition_point(|symbol| symbol.address <= address);
        let symbol = self.symbols.get(after.checked_sub(1)?)?;
        if symbol.size != 0 && address - symbol.address >= symbol.size {
            return None;
        }
        Some(symbol)
    }

    /// Frames at a file address, innermost first; empty when nothing is known.
    fn frames_at(&self, address: u64) -> Vec<Frame> {
        let mut frames = Vec::new();
        if let Some(context) = &self.dwarf {
            if let Ok(mut iter) = context.find_frames(address).skip_all_loads() {
                while let Ok(Some(frame)) = iter.next() {
                    let (function, system_name) = match &frame.function {
                        Some(name) => (
                            name.demangle().map(Cow::into_owned).unwrap_or_default(),
                            name.raw_name().map(Cow::into_owned).unwrap_or_default(),
                        ),
                        None => (String::new(), String::new()),
                    };
                    let (file, line) = match &frame.location {
                        Some(location) => (
                            location.file.map(str::to_string),
                            location.line.unwrap_or(0),
                        ),
                        None => (None, 0),
                    };
                    frames.push(Frame {
                        function,
                        system_name,
                        file,
                        line,
                    });
                }
            }
        }
        let symbol = self.symbol_at(address);
        match (frames.last_mut(), symbol) {
            // DWARF found nothing: the symbol table alone.
            (None, Some(symbol)) => frames.push(Frame {
                function: demangle(&symbol.name),
                system_name: symbol.name.clone(),
                file: None,
                line: 0,
            }),
            // A line table without a function entry: name it from the symbol table.
            (Some(outer), Some(symbol)) if outer.function.is_empty() => {
                outer.function = demangle(&symbol.name);
                outer.system_name = symbol.name.clone();
            }
            _ => {}
        }
        for frame in &mut frames {
            if frame.function.is_empty() {
                frame.function = "??".to_string();
            }
        }
        frames
    }
}

/// Reads ELF files and resolves addresses; one per run.
#[derive(Default)]
pub struct Symbolizer {
    objects: HashMap<String, Option<Rc<ElfObject>>>,
}

impl Symbolizer {
    pub fn new() -> Symbolizer {
        Symbolizer::default()
    }

    /// The object at `path`, read on first use; `None` (after one note on stderr) if it
    /// cannot be read.
    pub fn object(&mut self, path: &str) -> Option<Rc<ElfObject>> {
        self.objects
            .entry(path.to_string())
            .or_insert_with(|| match ElfObject::load(Path::new(path)) {
                Ok(object) => Some(Rc::new(object)),
                Err(why) => {
                    eprintln!(
                        "oxprof: note: cannot read {path} ({why}); its addresses stay unnamed"
                    );
                    None
                }
            })
            .clone()
    }

    /// Everything known about return address `pc` in a process with these maps.
    pub fn locate(&mut self, pc: u64, maps: &[MapEntry]) -> Location {
        let mut location = Location {
            pc,
            mapping: None,
            frames: Vec::new(),
        };
        let address = location.address();
        let Some(index) = maps.iter().position(|map| map.contains(address)) else {
            return location;
        };
        location.mapping = Some(index);
        let map = &maps[index];
        let Some(object) = map.file_path().and_then(|path| self.object(path)) else {
            return location;
        };
        let file_offset = address - map.start + map.offset;
        if let Some(file_address) = object.address_of_file_offset(file_offset) {
            location.frames = object.frames_at(file_address);
        }
        location
    }
}

/// Best-effort demangling of a symbol table name (Rust, then C++; C names unchanged).
fn demangle(name: &str) -> String {
    addr2line::demangle_auto(Cow::Borrowed(name), None).into_owned()
}

fn has_section(file: &object::File<'_>, name: &str) -> bool {
    file.section_by_name(name)
        .is_some_and(|section| section.size() > 0)
}

/// The defined function symbols of a table, sorted by address, one per address.
fn function_symbols<'data, S: ObjectSymbol<'data>>(
    symbols: impl Iterator<Item = S>,
) -> Vec<Symbol> {
    // (address, rank, symbol): among aliases of one address, keep the global one with the
    // fewest leading underscores (`malloc`, not `__libc_malloc`).
    let mut found: Vec<(u64, (bool, usize, usize), Symbol)> = symbols
        .filter(|symbol| {
            symbol.kind() == SymbolKind::Text && symbol.is_definition() && symbol.address() != 0
        })
        .filter_map(|symbol| {
            let name = symbol.name().ok()?;
            if name.is_empty() {
                return None;
            }
            let underscores = name.len() - name.trim_start_matches('_').len();
            let rank = (!symbol.is_global(), underscores, name.len());
            Some((
                symbol.address(),
                rank,
                Symbol {
                    address: symbol.address(),
                    size: symbol.size(),
                    name: name.to_string(),
                },
            ))
        })
        .collect();
    found.sort_by_key(|entry| (entry.0, entry.1));
    found.dedup_by_key(|entry| entry.0);
    found.into_iter().map(|(_, _, symbol)| symbol).collect()
}

/// A section's bytes (decompressed), or empty, as gimli reads them.
fn section_reader(
    file: &object::File<'static>,
    name: &str,
    endian: gimli::RunTimeEndian,
) -> Reader {
    let data = match file
        .section_by_name(name)
        .and_then(|section| section.uncompressed_data().ok())
    {
        Some(Cow::Borrowed(data)) => data,
        Some(Cow::Owned(decompressed)) => keep(decompressed),
        None => &[],
    };
    gimli::EndianSlice::new(data, endian)
}

/// Keeps bytes for the rest of the run (see the module note).
fn keep(data: Vec<u8>) -> &'static [u8] {
    Box::leak(data.into_boxed_slice())
}

fn load_dwarf(file: &object::File<'static>, path: &Path) -> Option<addr2line::Context<Reader>> {
    let endian = if file.is_little_endian() {
        gimli::RunTimeEndian::Little
    } else {
        gimli::RunTimeEndian::Big
    };
    let mut dwarf =
        gimli::Dwarf::load(|id| Ok::<_, ()>(section_reader(file, id.name(), endian))).ok()?;
    if let Ok(Some((name, build_id))) = file.gnu_debugaltlink() {
        let sup_data = find_supplementary_file(path, name, build_id);
        if let Some(sup) = sup_data
            .as_ref()
            .and_then(|data| object::File::parse(*data).ok())
        {
            // Without it, names and lines that dwz moved out stay unknown.
            let _ = dwarf.load_sup(|id| Ok::<_, ()>(section_reader(&sup, id.name(), endian)));
        }
    }
    addr2line::Context::from_dwarf(dwarf).ok()
}

/// `/usr/lib/debug/.build-id/ab/cdef….debug`
fn build_id_path(build_id: &[u8]) -> Option<PathBuf> {
    let (first, rest) = build_id.split_first()?;
    if rest.is_empty() {
        return None;
    }
    let rest: String = rest.iter().map(|byte| format!("{byte:02x}")).collect();
    Some(Path::new(DEBUG_ROOT).join(format!(".build-id/{first:02x}/{rest}.debug")))
}

/// A separate debug file for the object at `path`, with its bytes.
fn find_debug_file(
    path: &Path,
    file: &object::File<'_>,
    build_id: Option<&[u8]>,
) -> Option<(PathBuf, &'static [u8])> {
    let mut candidates: Vec<(PathBuf, Option<u32>)> = Vec::new();
    if let Some(by_id) = build_id.and_then(build_id_path) {
        candidates.push((by_id, None));
    }
    if let Ok(Some((name, crc))) = file.gnu_debuglink() {
        let name = Path::new(OsStr::from_bytes(name));
        let dir = path.parent().unwrap_or(Path::new("/"));
        candidates.push((dir.join(name), Some(crc)));
        candidates.push((dir.join(".debug").join(name), Some(crc)));
        let relative_dir = dir.strip_prefix("/").unwrap_or(dir);
        candidates.push((
            Path::new(DEBUG_ROOT).join(relative_dir).join(name),
            Some(crc),
        ));
    }
    candidates
        .into_iter()
        .filter(|(candidate, _)| candidate != path)
        .find_map(|(candidate, crc)| {
            let data = std::fs::read(&candidate).ok()?;
            if let Some(crc) = crc {
                let mut sum = flate2::Crc::new();
                sum.update(&data);
                if sum.sum() != crc {
                    return None;
                }
            }
            Some((candidate, keep(data)))
        })
}

/// The dwz supplementary file named by `.gnu_debugaltlink` of the debug file at `path`.
fn find_supplementary_file(path: &Path, name: &[u8], build_id: &[u8]) -> Option<&'static [u8]> {
    let name = Path::new(OsStr::from_bytes(name));
    let mut candidates = vec![path.parent().unwrap_or(Path::new("/")).join(name)];
    candidates.extend(build_id_path(build_id));
    candidates
        .iter()
        .find_map(|candidate| std::fs::read(candidate).ok())
        .map(keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_id_paths_split_the_first_byte() {
        assert_eq!(
            build_id_path(&[0xab, 0xcd, 0x01]),
            Some(PathBuf::from("/usr/lib/debug/.build-id/ab/cd01.debug"))
        );
        assert_eq!(build_id_path(&[0xab]), None);
    }

    #[test]
    fn demangles_rust_and_cpp_and_keeps_c() {
        assert_eq!(demangle("_ZN3foo3bar17h0123456789abcdefE"), "foo::bar");
        assert_eq!(demangle("_Z3addii"), "add(int, int)");
        assert_eq!(demangle("main"), "main");
    }

    #[test]
    fn unknown_addresses_name_their_object() {
        let maps = vec![crate::raw::parse_map_line(
            "7f0000000000-7f0000001000 r-xp 00000000 08:01 7 /usr/lib/libfoo.so (deleted)",
            1,
        )
        .unwrap()];
        let mut symbolizer = Symbolizer::new();
        let location = symbolizer.locate(0x7f0000000010, &maps);
        assert_eq!(location.mapping, Some(0));
        assert!(location.frames.is_empty());
        assert_eq!(
            location.names_root_first(&maps),
            vec!["0x7f0000000010 (libfoo.so)".to_string()]
        );
        let outside = symbolizer.locate(0x10, &maps);
        assert_eq!(outside.unknown_name(&maps), "0x10");
    }

    #[test]
    fn names_this_test_binary() {
        // The running test binary, through its own maps: the whole path a real profile
        // takes, ASLR included.
        let maps_text = std::fs::read_to_string("/proc/self/maps").unwrap();
        let maps: Vec<MapEntry> = maps_text
            .lines()
            .enumerate()
            .map(|(i, line)| crate::raw::parse_map_line(line, i + 1).unwrap())
            .collect();
        let pc = names_this_test_binary as *const () as usize as u64 + 1;
        let location = Symbolizer::new().locate(pc, &maps);
        let names = location.names_root_first(&maps);
        assert!(
            names.last().unwrap().ends_with("names_this_test_binary"),
            "{names:?}"
        );
    }
}
