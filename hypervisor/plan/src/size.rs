//! Byte sizes as written in plans: `4096`, `"512M"`, `"1GiB"`, `"64KiB"` (K/M/G/T with or
//! without `iB`, all binary), and their human-readable form for messages and tables.
