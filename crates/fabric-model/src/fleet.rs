//! Checks across machines (filled in below).
