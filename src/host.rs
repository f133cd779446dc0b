//! Host normalisation.
