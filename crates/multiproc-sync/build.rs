//! Declares the `loom` cfg used by `tests/loom.rs`.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(loom)");
}
