//! Gives the shared library its soname, `liboxmalloc.so.0`: a program linked with
//! `-loxmalloc` records that name, and `scripts/install` installs the library as
//! `liboxmalloc.so.0.1.0` with the `liboxmalloc.so.0` and `liboxmalloc.so` links.
//!
//! In the build tree the file is `target/<profile>/liboxmalloc.so`, so a program linked
//! against it there finds it at run time only through a `liboxmalloc.so.0` link beside it:
//! this script makes that link (dangling until the library is linked; `cargo` writes the
//! library after the build script runs).

use std::path::PathBuf;

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,liboxmalloc.so.0");
    println!("cargo:rerun-if-changed=build.rs");
    // OUT_DIR is target/<profile>/build/<package>-<hash>/out.
    if let Some(profile_dir) = std::env::var_os("OUT_DIR")
        .map(PathBuf::from)
        .and_then(|out| out.ancestors().nth(3).map(PathBuf::from))
    {
        let link = profile_dir.join("liboxmalloc.so.0");
        if std::fs::symlink_metadata(&link).is_err() {
            // Best effort: without the link, programs linked in the build tree need
            // LD_LIBRARY_PATH or an installed library.
            let _ = std::os::unix::fs::symlink("liboxmalloc.so", &link);
        }
    }
}
