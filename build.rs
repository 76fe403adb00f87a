//! Links the `rivulet` binary as a position-dependent executable on Linux. A position-
//! independent one is relocated by the dynamic loader at every start: polars' 134 K pointers
//! in 2.5 MB of tables, a copy-on-write page fault per page touched, about 2 ms of every run
//! (measured: `rivulet --version` 2.4 ms, a 10-row pipeline 8.9 ms). Linked at a fixed address,
//! those pointers are written by the linker instead. The cost is that the binary itself is not
//! placed at a random address (its heap, stack and libraries still are).
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
