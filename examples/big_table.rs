//! A herd::worker application whose preload builds a large read-only table
//! (`BIG_TABLE_MB` MiB of u64, 64 by default). With `spawn = preload` the
//! workers share it copy-on-write instead of each building its own.
//!
//! `?i=N` answers `table[N]`; without `i` it describes the table. A
//! `BIG_TABLE_MB` that is not a number fails preload: exit code 78, which
//! herd reads as "do not retry" when the pool lists it in
//! `worker.fatal_exit_codes`.

use std::io::Write;
use std::process::ExitCode;

use herd::worker::{self, App, Context, Error, Request, Response, ensure};

struct BigTable {
    table: Vec<u64>,
}

/// What entry `i` holds: cheap to recompute, so validate can check it.
fn pattern(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ i
}

impl App for BigTable {
    fn preload() -> Result<Self, Error> {
        let mb: usize = match std::env::var("BIG_TABLE_MB") {
            Ok(v) => v
                .trim()
                .parse()
                .with_context(|| format!("BIG_TABLE_MB={v:?} is not a number of MiB"))?,
            Err(_) => 64,
        };
        let len = mb * (1 << 20) / size_of::<u64>();
        let table = (0..len as u64).map(pattern).collect();
        Ok(BigTable { table })
    }

    fn validate(&self) -> Result<(), Error> {
        ensure!(
            !self.table.is_empty(),
            "the table is empty (BIG_TABLE_MB=0)"
        );
        let last = self.table.len() - 1;
        for i in [0, 1, last / 2, last] {
            ensure!(
                self.table[i] == pattern(i as u64),
                "table[{i}] holds {:#x}, not {:#x}",
                self.table[i],
                pattern(i as u64)
            );
        }
        Ok(())
    }

    fn handle(&self, req: &mut Request<'_>, resp: &mut Response<'_>) -> Result<(), Error> {
        let len = self.table.len();
        let mib = len * size_of::<u64>() / (1 << 20);
        let Some(i) = req.query_param("i") else {
            writeln!(resp, "{len} entries ({mib} MiB); ask for ?i=N")?;
            return Ok(());
        };
        match i.parse::<usize>() {
            Ok(i) if i < len => {
                writeln!(
                    resp,
                    "table[{i}] = {} of {len} entries ({mib} MiB)",
                    self.table[i]
                )?;
            }
            Ok(i) => {
                resp.status(404)?;
                writeln!(resp, "no entry {i}: the table has {len}")?;
            }
            Err(_) => {
                resp.status(400)?;
                writeln!(resp, "i must be a number")?;
            }
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    worker::run::<BigTable>()
}
