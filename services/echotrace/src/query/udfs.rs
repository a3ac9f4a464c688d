//! Functions analysts need beside DataFusion's own:
//!
//! - `hamming(a, b)`: differing bits between two simhashes (`posts.simhash`), e.g.
//!   `WHERE hamming(p.simhash, q.simhash) <= 3`;
//! - `canonical_url(text)`: the canonical form echotrace links shared URLs by (tracking parameters
//!   and fragment dropped, host lower-cased), NULL for what is not a URL to a resource.
//!
//! A cascade's lineage is a recursive CTE over `posts.parent_id`; `docs/queries.md` has it.

use arrow_array::{ArrayRef, StringArray, UInt32Array};
use arrow_schema::DataType;
use datafusion::common::cast::{as_string_array, as_uint64_array};
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion::prelude::SessionContext;
use echotrace_core::link::urls::canonical_url;
use std::sync::Arc;

/// Registers every function on the session.
pub fn register(context: &SessionContext) {
    context.register_udf(create_udf(
        "hamming",
        vec![DataType::UInt64, DataType::UInt64],
        DataType::UInt32,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let (a, b) = (as_uint64_array(&arrays[0])?, as_uint64_array(&arrays[1])?);
            let out: UInt32Array = a.iter().zip(b.iter()).map(|(a, b)| Some((a? ^ b?).count_ones())).collect();
            Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
        }),
    ));
    context.register_udf(create_udf(
        "canonical_url",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let texts = as_string_array(&arrays[0])?;
            let out: StringArray = texts.iter().map(|t| t.and_then(canonical_url)).collect();
            Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
        }),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;

    #[tokio::test]
    async fn hamming_and_canonical_url() {
        let context = SessionContext::new();
        register(&context);
        let batches = context
            .sql("SELECT hamming(arrow_cast(7, 'UInt64'), arrow_cast(0, 'UInt64')) AS h, canonical_url('HTTP://A.example/x/?utm_source=y#f') AS u, canonical_url('nope') AS n")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let batch = &batches[0];
        assert_eq!(batch.column(0).as_any().downcast_ref::<UInt32Array>().unwrap().value(0), 3);
        assert_eq!(batch.column(1).as_any().downcast_ref::<StringArray>().unwrap().value(0), "https://a.example/x");
        assert!(batch.column(2).is_null(0));
    }
}
