//! Links libtorch with an rpath, so binaries and tests run without LD_LIBRARY_PATH
//! (torch-sys exports its library folder as DEP_TCH_LIBTORCH_LIB to direct dependents), and
//! forces libtorch_cuda in with the `cuda` feature (the linker's --as-needed would drop it).
fn main() {
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
