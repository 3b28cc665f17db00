//! `helios`: the bidder binary (work in progress).

#[global_allocator]
static ALLOC: appliance::alloc_count::CountingAlloc = appliance::alloc_count::CountingAlloc;

fn main() {}
