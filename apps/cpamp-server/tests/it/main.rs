//! Black-box tests: the real `cpamp-server` binary (and, where a test needs to reach
//! inside, the same `Application` in-process) against real SQLite files.

mod process;
mod setup;
mod support;
