//! Parsers for option values: pure functions over bytes, no allocation, `None` for anything
//! they do not accept (the caller then warns and keeps the default).

/// Lower-cases ASCII `text` into `out`; `None` if it does not fit.
fn lower<'a>(text: &[u8], out: &'a mut [u8; 16]) -> Option<&'a [u8]> {
    let dest = out.get_mut(..text.len())?;
    for (d, s) in dest.iter_mut().zip(text) {
        *d = s.to_ascii_lowercase();
    }
    Some(dest)
}

/// `1`/`0`, `true`/`false`, `yes`/`no`, `on`/`off`, in any case.
pub fn boolean(text: &[u8]) -> Option<bool> {
    let mut buf = [0u8; 16];
    match lower(text, &mut buf)? {
        b"1" | b"true" | b"yes" | b"on" => Some(true),
        b"0" | b"false" | b"no" | b"off" => Some(false),
        _ => None,
    }
}

/// A whole decimal number that fits in `u64` (digits only: no sign, no spaces).
pub fn unsigned(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(v)
}

/// A whole number of milliseconds that fits in `u32`.
pub fn millis(text: &[u8]) -> Option<u32> {
    u32::try_from(unsigned(text)?).ok()
}

/// A byte count: digits with an optional suffix `k`/`K` (KiB), `m`/`M` (MiB) or `g`/`G`
/// (GiB).
pub fn bytes(text: &[u8]) -> Option<u64> {
    let (digits, shift) = match text.split_last()? {
        (b'k' | b'K', rest) => (rest, 10),
        (b'm' | b'M', rest) => (rest, 20),
        (b'g' | b'G', rest) => (rest, 30),
        _ => (text, 0),
    };
    let v = unsigned(digits)?;
    v.checked_mul(1u64 << shift)
}

/// What `OXMALLOC_STATS` asks for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum StatsMode {
    /// No report.
    Off = 0,
    /// A report for people.
    Text = 1,
    /// One JSON object.
    Json = 2,
}

impl StatsMode {
    /// The mode stored as a number.
    pub fn from_u64(v: u64) -> StatsMode {
        match v {
            1 => StatsMode::Text,
            2 => StatsMode::Json,
            _ => StatsMode::Off,
        }
    }

    /// Its name in option values.
    pub fn name(self) -> &'static str {
        match self {
            StatsMode::Off => "off",
            StatsMode::Text => "text",
            StatsMode::Json => "json",
        }
    }
}

/// `off` (or a false boolean), `text` (or `1` and the other true booleans), `json`.
pub fn stats_mode(text: &[u8]) -> Option<StatsMode> {
    let mut buf = [0u8; 16];
    match lower(text, &mut buf)? {
        b"text" => Some(StatsMode::Text),
        b"json" => Some(StatsMode::Json),
        b"off" => Some(StatsMode::Off),
        other => boolean(other).map(|on| if on { StatsMode::Text } else { StatsMode::Off }),
    }
}

/// Signal names and numbers (Linux, x86-64 and aarch64 agree on these). `KILL` and `STOP`
/// are absent: they cannot be caught.
const SIGNALS: [(&[u8], i32); 29] = [
    (b"hup", libc::SIGHUP),
    (b"int", libc::SIGINT),
    (b"quit", libc::SIGQUIT),
    (b"ill", libc::SIGILL),
    (b"trap", libc::SIGTRAP),
    (b"abrt", libc::SIGABRT),
    (b"iot", libc::SIGIOT),
    (b"bus", libc::SIGBUS),
    (b"fpe", libc::SIGFPE),
    (b"usr1", libc::SIGUSR1),
    (b"segv", libc::SIGSEGV),
    (b"usr2", libc::SIGUSR2),
    (b"pipe", libc::SIGPIPE),
    (b"alrm", libc::SIGALRM),
    (b"term", libc::SIGTERM),
    (b"stkflt", libc::SIGSTKFLT),
    (b"chld", libc::SIGCHLD),
    (b"cont", libc::SIGCONT),
    (b"tstp", libc::SIGTSTP),
    (b"ttin", libc::SIGTTIN),
    (b"ttou", libc::SIGTTOU),
    (b"urg", libc::SIGURG),
    (b"xcpu", libc::SIGXCPU),
    (b"xfsz", libc::SIGXFSZ),
    (b"vtalrm", libc::SIGVTALRM),
    (b"prof", libc::SIGPROF),
    (b"winch", libc::SIGWINCH),
    (b"io", libc::SIGIO),
    (b"pwr", libc::SIGPWR),
];

/// Highest signal number on Linux.
const SIGNAL_MAX: i32 = 64;

/// A signal: a name with or without `SIG` in any case (`SIGUSR2`, `usr2`), `RTMIN+n` /
/// `RTMAX-n`, or a number from 1 to 64; `0` or `none` for no signal. `KILL` and `STOP` are
/// refused (they cannot be caught).
pub fn signal(text: &[u8]) -> Option<i32> {
    let mut buf = [0u8; 16];
    let lowered = lower(text, &mut buf)?;
    if lowered == b"none" {
        return Some(0);
    }
    if let Some(n) = unsigned(lowered) {
        let n = i32::try_from(n).ok()?;
        return (n == 0
            || (1..=SIGNAL_MAX).contains(&n) && n != libc::SIGKILL && n != libc::SIGSTOP)
            .then_some(n);
    }
    let name = lowered.strip_prefix(b"sig").unwrap_or(lowered);
    if let Some(offset) = name.strip_prefix(b"rtmin") {
        let n = rt_offset(offset, b'+')?;
        return Some(libc::SIGRTMIN() + n).filter(|&s| s <= libc::SIGRTMAX());
    }
    if let Some(offset) = name.strip_prefix(b"rtmax") {
        let n = rt_offset(offset, b'-')?;
        return Some(libc::SIGRTMAX() - n).filter(|&s| s >= libc::SIGRTMIN());
    }
    SIGNALS.iter().find(|(n, _)| *n == name).map(|&(_, s)| s)
}

/// The `+n` / `-n` after `RTMIN` / `RTMAX` (empty means 0).
fn rt_offset(text: &[u8], sign: u8) -> Option<i32> {
    match text.split_first() {
        None => Some(0),
        Some((&s, digits)) if s == sign => i32::try_from(unsigned(digits)?).ok(),
        Some(_) => None,
    }
}

/// The conventional name of signal `number` without `SIG` (`USR2`), if it has one.
pub fn signal_name(number: i32) -> Option<&'static str> {
    const UPPER: [&str; 29] = [
        "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "IOT", "BUS", "FPE", "USR1", "SEGV", "USR2",
        "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "TSTP", "TTIN", "TTOU", "URG", "XCPU",
        "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR",
    ];
    let i = SIGNALS.iter().position(|&(_, s)| s == number)?;
    UPPER.get(i).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_in_every_spelling() {
        for yes in ["1", "true", "TRUE", "Yes", "on", "ON"] {
            assert_eq!(boolean(yes.as_bytes()), Some(true), "{yes}");
        }
        for no in ["0", "false", "False", "no", "NO", "off", "Off"] {
            assert_eq!(boolean(no.as_bytes()), Some(false), "{no}");
        }
        for bad in [
            "",
            "2",
            "-1",
            "enable",
            "truee",
            "y",
            " 1",
            "aaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert_eq!(boolean(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn numbers_parse_strictly() {
        assert_eq!(millis(b"250"), Some(250));
        assert_eq!(millis(b"4294967295"), Some(u32::MAX));
        assert_eq!(millis(b"4294967296"), None);
        assert_eq!(millis(b""), None);
        assert_eq!(millis(b"12x"), None);
        assert_eq!(millis(b"-1"), None);
        assert_eq!(millis(b"abc"), None);
        assert_eq!(millis(b" 5"), None);
    }

    #[test]
    fn byte_counts_take_suffixes() {
        assert_eq!(bytes(b"524288"), Some(524288));
        assert_eq!(bytes(b"512k"), Some(512 << 10));
        assert_eq!(bytes(b"512K"), Some(512 << 10));
        assert_eq!(bytes(b"3m"), Some(3 << 20));
        assert_eq!(bytes(b"3M"), Some(3 << 20));
        assert_eq!(bytes(b"2G"), Some(2 << 30));
        assert_eq!(bytes(b"0"), Some(0));
        assert_eq!(bytes(b"k"), None);
        assert_eq!(bytes(b"1.5M"), None);
        assert_eq!(bytes(b"1KB"), None);
        assert_eq!(bytes(b"-1"), None);
        assert_eq!(bytes(b"99999999999999999999"), None);
        assert_eq!(bytes(b"17179869184G"), None);
    }

    #[test]
    fn stats_modes() {
        assert_eq!(stats_mode(b"1"), Some(StatsMode::Text));
        assert_eq!(stats_mode(b"text"), Some(StatsMode::Text));
        assert_eq!(stats_mode(b"TEXT"), Some(StatsMode::Text));
        assert_eq!(stats_mode(b"yes"), Some(StatsMode::Text));
        assert_eq!(stats_mode(b"json"), Some(StatsMode::Json));
        assert_eq!(stats_mode(b"JSON"), Some(StatsMode::Json));
        assert_eq!(stats_mode(b"0"), Some(StatsMode::Off));
        assert_eq!(stats_mode(b"off"), Some(StatsMode::Off));
        assert_eq!(stats_mode(b"false"), Some(StatsMode::Off));
        assert_eq!(stats_mode(b"xml"), None);
        assert_eq!(stats_mode(b"2"), None);
    }

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(signal(b"SIGUSR2"), Some(libc::SIGUSR2));
        assert_eq!(signal(b"USR2"), Some(libc::SIGUSR2));
        assert_eq!(signal(b"usr1"), Some(libc::SIGUSR1));
        assert_eq!(signal(b"SigProf"), Some(libc::SIGPROF));
        assert_eq!(signal(b"12"), Some(12));
        assert_eq!(signal(b"64"), Some(64));
        assert_eq!(signal(b"0"), Some(0));
        assert_eq!(signal(b"none"), Some(0));
        assert_eq!(signal(b"SIGRTMIN"), Some(libc::SIGRTMIN()));
        assert_eq!(signal(b"RTMIN+2"), Some(libc::SIGRTMIN() + 2));
        assert_eq!(signal(b"SIGRTMAX-1"), Some(libc::SIGRTMAX() - 1));
        assert_eq!(signal(b"RTMIN+99"), None);
        assert_eq!(signal(b"RTMIN-1"), None);
        assert_eq!(signal(b"65"), None);
        assert_eq!(signal(b"-1"), None);
        assert_eq!(signal(b"SIGKILL"), None);
        assert_eq!(signal(b"9"), None);
        assert_eq!(signal(b"STOP"), None);
        assert_eq!(signal(b"SIGFOO"), None);
        assert_eq!(signal(b""), None);
        assert_eq!(signal_name(libc::SIGUSR2), Some("USR2"));
        assert_eq!(signal_name(libc::SIGPWR), Some("PWR"));
        assert_eq!(signal_name(40), None);
    }
}
