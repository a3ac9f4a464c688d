//! Sinks: where detections go. [`parquet`] makes them durable; [`kafka`] publishes edges and dead
//! letters. The consumer commits offsets only after both have finished with a message's output.

pub mod kafka;
pub mod parquet;
