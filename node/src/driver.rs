//! (being written: see the node issue)
