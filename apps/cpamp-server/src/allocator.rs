//! The memory allocator's settings for the long-running server.
//!
//! With glibc's defaults a busy server keeps far more memory than it uses: each thread
//! that allocates gets an arena of its own (up to eight per core), and a freed large
//! buffer raises the size below which allocations stay in those arenas, so memory
//! freed after a burst of requests or a lagging store stays resident. Under the load
//! benchmark that was about twice the heap in use. glibc reads its tunables only when
//! a process starts, and the server forbids `unsafe` (so no `mallopt`): when
//! `GLIBC_TUNABLES` is unset, the server executes itself again, at once and before any
//! thread exists, with one arena and a fixed 128 KiB threshold above which buffers are
//! mapped and returned to the system when freed. One arena rather than two: under the
//! load benchmark (100 panels, 5,000 events/s) the free space a second arena kept
//! resident beside the first's raised the peak by 5–9 MiB, and sharing one arena's lock
//! did not move the requests' p99 in the same runs. Setting `GLIBC_TUNABLES` (to anything,
//! or to nothing) keeps the environment's choice.

/// The settings the server starts with when the environment names none.
pub const TUNABLES: &str = "glibc.malloc.arena_max=1:glibc.malloc.mmap_threshold=131072:glibc.malloc.trim_threshold=131072";

/// Executes the running binary again with [`TUNABLES`] unless `GLIBC_TUNABLES` is set
/// (or this is not glibc). Returns only when it did not (or could not) execute.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        if std::env::var_os("GLIBC_TUNABLES").is_some() {
            return;
        }
        let Ok(executable) = std::env::current_exe() else {
            return;
        };
        let mut arguments = std::env::args_os();
        let name = arguments
            .next()
            .unwrap_or_else(|| executable.clone().into());
        // `exec` returns only on failure; the server then runs with glibc's defaults.
        let error = std::process::Command::new(&executable)
            .arg0(name)
            .args(arguments)
            .env("GLIBC_TUNABLES", TUNABLES)
            .exec();
        eprintln!(
            "could not restart with allocator settings ({error}); running with glibc's defaults"
        );
    }
}
