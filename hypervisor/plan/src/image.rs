//! The arm64 Linux `Image` header (Documentation/arch/arm64/booting.rst): validated in the order
//! length -> magic -> fields, used by xtask to size slices and by the hypervisor before loading.
