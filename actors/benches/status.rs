//! Reports folded per second by the delivery status machine.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use pushd_actors::status::{DeliveryState, DeviceState, Outcome, Report};
use std::hint::black_box;

/// A person with two devices: both sent, then delivered, opened and
/// converted reports (with a duplicate) — eight events per delivery.
fn fold(state: &mut DeliveryState) {
    state.apply_outcome(0, &Outcome::Sent, 1);
    state.apply_outcome(1, &Outcome::Sent, 1);
    state.apply_report(0, Report::Delivered, 2);
    state.apply_report(1, Report::Delivered, 3);
    state.apply_report(1, Report::Opened, 4);
    state.apply_report(1, Report::Opened, 4);
    state.apply_report(1, Report::Converted, 5);
    black_box(state.status());
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("status");
    group.throughput(Throughput::Elements(8));
    group.bench_function("fold_8_events_2_devices", |b| {
        b.iter_batched_ref(
            || DeliveryState::new(vec![DeviceState::attempted(); 2]),
            fold,
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
