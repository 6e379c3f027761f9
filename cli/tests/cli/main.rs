//! End-to-end tests of the `redlock` binary: real redis-server processes started by the
//! library's harness, the tool run as a process, as an operator or a cron job would.
//! One test binary (the modules below), as the library's own integration tests are.

mod lost;
mod report;
mod run;
mod support;
mod usage;
