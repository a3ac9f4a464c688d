//! Functions analysts need beside DataFusion's own:
//!
//! - `hamming(a, b)`: differing bits between two simhashes (`posts.simhash`), e.g.
//!   `WHERE hamming(p.simhash, q.simhash) <= 3`;
//! - `canonical_url(text)`: the canonical form echotrace links shared URLs by (tracking parameters
//!   and fragment dropped, host lower-cased), NULL for what is not a URL to a resource;
//! - `cosine(a, b)`: how well post `b` covers post `a` in meaning, from their sentence embeddings
//!   (`posts.embedding`, one unit vector per chunk): for each chunk of `a` its best cosine with a
//!   chunk of `b`, averaged over `a`'s chunks, which is how `edges.cosine` is measured from child to
//!   parent; for two one-chunk texts (most posts) the plain cosine, and symmetric. NULL when
//!   either post was not embedded.
//!
//! A post's lineage is the table function `lineage(post_id)` ([`super::lineage`]).

use arrow_array::{Array, ArrayRef, Float32Array, ListArray, StringArray, UInt32Array};
use arrow_schema::DataType;
use datafusion::common::cast::{as_float32_array, as_list_array, as_string_array, as_uint64_array};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, create_udf,
};
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
    context.register_udf(ScalarUDF::new_from_impl(Cosine { signature: Signature::any(2, Volatility::Immutable) }));
}

/// `cosine(a, b)` over `posts.embedding` values.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Cosine {
    signature: Signature,
}

impl ScalarUDFImpl for Cosine {
    fn name(&self) -> &str {
        "cosine"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, types: &[DataType]) -> Result<DataType> {
        for data_type in types {
            if !is_embedding(data_type) {
                return plan_err!(
                    "cosine(a, b) compares two posts.embedding values (a list of Float32 vectors), not {data_type}"
                );
            }
        }
        Ok(DataType::Float32)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let (a, b) = (as_list_array(&arrays[0])?, as_list_array(&arrays[1])?);
        let mut out = Vec::with_capacity(a.len());
        for row in 0..a.len() {
            out.push(if a.is_null(row) || b.is_null(row) { None } else { coverage(a, b, row)? });
        }
        Ok(ColumnarValue::Array(Arc::new(Float32Array::from(out))))
    }
}

fn is_embedding(data_type: &DataType) -> bool {
    matches!(data_type, DataType::Null)
        || matches!(data_type, DataType::List(chunk) if matches!(chunk.data_type(), DataType::List(value) if value.data_type() == &DataType::Float32))
}

/// How well `b[row]` covers `a[row]`: each chunk of `a`'s best cosine with a chunk of `b`, averaged
/// over `a`'s chunks; `None` when one has no chunk.
fn coverage(a: &ListArray, b: &ListArray, row: usize) -> Result<Option<f32>> {
    let (a, b) = (a.value(row), b.value(row));
    let (a, b) = (as_list_array(&a)?, as_list_array(&b)?);
    if a.is_empty() || b.is_empty() {
        return Ok(None);
    }
    let mut sum = 0.0f32;
    for i in 0..a.len() {
        let x = a.value(i);
        let x = as_float32_array(&x)?;
        let mut best = f32::MIN;
        for j in 0..b.len() {
            let y = b.value(j);
            let y = as_float32_array(&y)?;
            if x.len() != y.len() {
                return exec_err!(
                    "cosine(a, b): vectors of {} and {} dimensions come from different models",
                    x.len(),
                    y.len()
                );
            }
            let (x, y) = (x.values(), y.values());
            let dot: f32 = x.iter().zip(y.iter()).map(|(x, y)| x * y).sum();
            let norms = x.iter().map(|v| v * v).sum::<f32>().sqrt() * y.iter().map(|v| v * v).sum::<f32>().sqrt();
            best = best.max(if norms > 0.0 { dot / norms } else { 0.0 });
        }
        sum += best;
    }
    Ok(Some(sum / a.len() as f32))
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

    /// A `posts.embedding` column of three rows: two chunks, one chunk, not embedded.
    fn embeddings() -> ArrayRef {
        use arrow_array::builder::{Float32Builder, ListBuilder};
        let mut chunks = ListBuilder::new(ListBuilder::new(Float32Builder::new()));
        for row in [vec![vec![1.0, 0.0], vec![0.0, 1.0]], vec![vec![0.6, 0.8]]] {
            for chunk in row {
                chunks.values().values().append_slice(&chunk);
                chunks.values().append(true);
            }
            chunks.append(true);
        }
        chunks.append(false);
        Arc::new(chunks.finish())
    }

    #[tokio::test]
    async fn cosine_is_the_coverage_of_the_first_by_the_second() {
        let context = SessionContext::new();
        register(&context);
        let column = embeddings();
        let schema = Arc::new(arrow_schema::Schema::new(vec![
            arrow_schema::Field::new("id", DataType::UInt32, false),
            arrow_schema::Field::new("embedding", column.data_type().clone(), true),
        ]));
        let ids: ArrayRef = Arc::new(UInt32Array::from(vec![0, 1, 2]));
        let batch = arrow_array::RecordBatch::try_new(schema, vec![ids, column]).unwrap();
        context.register_batch("posts", batch).unwrap();
        let result = context
            .sql("SELECT cosine(a.embedding, b.embedding) AS c FROM posts a CROSS JOIN posts b ORDER BY a.id, b.id")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let values: Vec<Option<f32>> = result
            .iter()
            .flat_map(|b| b.column(0).as_any().downcast_ref::<Float32Array>().unwrap().iter().collect::<Vec<_>>())
            .collect();
        let close = |got: Option<f32>, want: f32| got.is_some_and(|g| (g - want).abs() < 1e-6);
        // Rows in order a0b0, a0b1, a0b2, a1b0, ...: the one-chunk post is covered by the two-chunk
        // post's closer chunk (0.8); the two-chunk post's chunks are covered 0.6 and 0.8 by it.
        assert!(close(values[0], 1.0) && close(values[3], 0.8) && close(values[4], 1.0), "{values:?}");
        assert!(close(values[1], 0.7), "the mean of each chunk's best: {values:?}");
        assert!(values[2].is_none() && values[6].is_none(), "NULL when one was not embedded: {values:?}");
        let error = context.sql("SELECT cosine(1, 2)").await.unwrap_err().to_string();
        assert!(error.contains("posts.embedding"), "{error}");
    }
}
