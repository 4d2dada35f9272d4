//! The typed codec's options, measured before choosing: one encode plus one
//! decode of the payloads users send, at 1 KiB, 64 KiB and 1 MiB of data,
//! with
//! - `multiproc`: this crate's codec (its own serde serializer in bincode's
//!   wire form, copying runs of plain elements whole);
//! - `bincode_serde`: bincode 2's serde path, what the codec used before (a
//!   serde call per element);
//! - `bincode_native`: bincode 2's own `Encode`/`Decode` traits (derived),
//!   which copy byte slices whole but go element by element for floats, and
//!   need every type to derive bincode's traits instead of serde's;
//! - `copy_floor`: the payload's bytes copied into a fresh vector twice (an
//!   encode and a decode that do nothing but move bytes).
//!
//! Run: `cargo bench -p multiproc-core --bench codec`
//! (`-- Vec_f32/64KiB` for one group).

use bincode::config::standard;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use multiproc_core::codec;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::hint::black_box;
use std::time::Duration;

/// A sampled signal: a header and a `Vec<f64>`.
#[derive(Serialize, Deserialize, bincode::Encode, bincode::Decode, Clone, PartialEq, Debug)]
struct Frame {
    id: u64,
    rate_hz: u32,
    samples: Vec<f64>,
}

trait Payload:
    Serialize + DeserializeOwned + bincode::Encode + bincode::Decode<()> + PartialEq + std::fmt::Debug
{
    const NAME: &'static str;
    fn build(size: usize) -> Self;
    /// The data bytes, for the copy floor (floats: their encoding, which
    /// is the bytes after a length prefix of a few bytes).
    fn data(&self) -> Vec<u8>;
}

impl Payload for Vec<u8> {
    const NAME: &'static str = "Vec_u8";
    fn build(size: usize) -> Self {
        (0..size).map(|i| i as u8).collect()
    }
    fn data(&self) -> Vec<u8> {
        self.clone()
    }
}

impl Payload for String {
    const NAME: &'static str = "String";
    fn build(size: usize) -> Self {
        (0..size)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect()
    }
    fn data(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
}

impl Payload for Vec<f32> {
    const NAME: &'static str = "Vec_f32";
    fn build(size: usize) -> Self {
        (0..size / 4).map(|i| i as f32 * 0.5).collect()
    }
    fn data(&self) -> Vec<u8> {
        codec::encode(self).expect("encode")
    }
}

impl Payload for Frame {
    const NAME: &'static str = "struct_Vec_f64";
    fn build(size: usize) -> Self {
        Frame {
            id: 7,
            rate_hz: 48_000,
            samples: (0..size / 8).map(|i| i as f64 * 0.25).collect(),
        }
    }
    fn data(&self) -> Vec<u8> {
        codec::encode(&self.samples).expect("encode")
    }
}

fn group<T: Payload>(c: &mut Criterion) {
    for size in [1024usize, 64 * 1024, 1 << 20] {
        let value = T::build(size);
        let mut g = c.benchmark_group(format!("{}/{}KiB", T::NAME, size / 1024));
        g.throughput(Throughput::Bytes(size as u64));
        g.warm_up_time(Duration::from_millis(300));
        g.measurement_time(Duration::from_secs(1));
        g.sample_size(20);
        // The same bytes from both bincode paths and ours.
        let ours = codec::encode(&value).expect("encode");
        assert_eq!(
            ours,
            bincode::encode_to_vec(&value, standard()).expect("native")
        );
        g.bench_function(BenchmarkId::from_parameter("multiproc"), |b| {
            b.iter(|| {
                let bytes = codec::encode(black_box(&value)).expect("encode");
                black_box(codec::decode::<T>(&bytes).expect("decode"))
            });
        });
        g.bench_function(BenchmarkId::from_parameter("bincode_serde"), |b| {
            b.iter(|| {
                let bytes =
                    bincode::serde::encode_to_vec(black_box(&value), standard()).expect("encode");
                black_box(
                    bincode::serde::decode_from_slice::<T, _>(&bytes, standard()).expect("decode"),
                )
            });
        });
        g.bench_function(BenchmarkId::from_parameter("bincode_native"), |b| {
            b.iter(|| {
                let bytes = bincode::encode_to_vec(black_box(&value), standard()).expect("encode");
                black_box(bincode::decode_from_slice::<T, _>(&bytes, standard()).expect("decode"))
            });
        });
        let data = value.data();
        g.bench_function(BenchmarkId::from_parameter("copy_floor"), |b| {
            b.iter(|| {
                let encoded = black_box(&data).to_vec();
                black_box(black_box(&encoded).to_vec())
            });
        });
        g.finish();
    }
}

fn benches(c: &mut Criterion) {
    group::<Vec<u8>>(c);
    group::<String>(c);
    group::<Vec<f32>>(c);
    group::<Frame>(c);
}

criterion_group!(codec_options, benches);
criterion_main!(codec_options);
