//! The bundle appended to the hypervisor image: the compiled plan plus every guest image
//! (deduplicated), each with its SHA-256.
