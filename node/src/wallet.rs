//! (being written: see the wallet issue)
