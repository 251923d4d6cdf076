//! Links the bare-metal probe at its fixed address with `link.ld`.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let target = std::env::var("TARGET").unwrap_or_default();
    // Only the bare-metal build uses the linker script; a host build of the
    // binary is a stub and the library is host-testable.
    if target.ends_with("-none") || target.ends_with("-none-softfloat") {
        println!("cargo:rustc-link-arg-bins=-T{dir}/link.ld");
    }
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-changed=build.rs");
}
