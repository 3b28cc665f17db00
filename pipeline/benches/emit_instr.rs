//! Instructions per `CoreSink::emit` on the core, journal on against journal off, for
//! callgrind (instruction counts are stable on a shared machine where wall time is not).
//! Emits `HELIOS_EMIT_EVENTS` (default 50,000) events through `emit_many` after a warm-up, with
//! the producer thread draining (broker unreachable: it spools; the queue never fills).
//! Run (both variants, side by side):
//! `cargo bench -p helios-pipeline --bench emit_instr --no-run`, then for `MODE` in `journal`
//! and `off`: `valgrind --tool=callgrind --toggle-collect='*emit_many*' <bench binary> MODE`
//! and `callgrind_annotate` the output: instructions inside `emit_many` ÷ events = per emit.
//! Without valgrind it prints wall time per emit (not a figure to rely on).

use std::hint::black_box;
use std::time::{Duration, Instant};

use codec::event::Event;
use pipeline::{CoreSink, Pipeline, PipelineConfig};

mod common;
use common::sample_event;

#[inline(never)]
fn emit_many(s: &mut CoreSink, events: &[Event]) {
    for e in events {
        s.emit(black_box(e));
    }
}

fn main() {
    let mode = std::env::args()
        .skip(1)
        .find(|a| a == "journal" || a == "off")
        .unwrap_or_else(|| "journal".into());
    let n: usize = std::env::var("HELIOS_EMIT_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let dir = std::env::temp_dir().join(format!("helios-emit-instr-{mode}-{}", std::process::id()));
    let cfg = PipelineConfig {
        journal_bytes_per_core: if mode == "journal" { 64 << 20 } else { 0 },
        ..common::unreachable_broker(dir.clone(), 1 << 17, 1 << 30)
    };
    let (p, mut sinks) = Pipeline::start(&cfg, 1).expect("pipeline starts");
    let mut s = sinks.pop().expect("one sink");
    let events: Vec<Event> = (0..n as u64 + 1_000).map(sample_event).collect();
    emit_many(&mut s, &events[..1_000]);
    let t = Instant::now();
    emit_many(&mut s, &events[1_000..]);
    let el = t.elapsed();
    let m = p.metrics();
    println!(
        "mode {mode}: {n} emits, {:.0} ns/emit wall (not a figure: see callgrind); overflowed {}, journal_full {} (both must be 0)",
        el.as_nanos() as f64 / n as f64,
        m.overflowed,
        m.journal_full
    );
    drop(s);
    p.shutdown(Duration::from_secs(5));
    let _ = std::fs::remove_dir_all(&dir);
}
