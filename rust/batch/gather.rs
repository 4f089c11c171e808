//! A batch's inputs picked and split: rows gathered by an order, boxes split by row.

/// `items[order[i]]` for each i, or the first index out of range.
///
/// ```
/// assert_eq!(_core::batch::gather::gather(&['a', 'b', 'c'], &[2, 0]), Ok(vec!['c', 'a']));
/// ```
pub fn gather<T: Copy>(items: &[T], order: &[u64]) -> Result<Vec<T>, String> {
    order
        .iter()
        .map(|&j| items.get(j as usize).copied().ok_or_else(|| format!("order holds {j}, out of range for {} images", items.len())))
        .collect()
}

/// Row i's boxes are `values[offsets[i]..offsets[i + 1]]`, (n, 4) flattened.
pub fn split_boxes<'a>(values: &'a [f64], offsets: &[i64], rows: usize) -> Result<Vec<&'a [[f64; 4]]>, String> {
    if offsets.len() != rows + 1 || !values.len().is_multiple_of(4) {
        return Err(format!("boxes need {} offsets and 4 values a box, got {} and {}", rows + 1, offsets.len(), values.len()));
    }
    let (quads, rest) = values.as_chunks::<4>();
    debug_assert!(rest.is_empty());
    offsets
        .windows(2)
        .map(|w| {
            let (a, b) = (w[0] as usize, w[1] as usize);
            quads.get(a..b).ok_or_else(|| format!("box offsets {a}..{b} are out of range for {} boxes", quads.len()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathers_and_names_the_index_out_of_range() {
        assert_eq!(gather(&[10, 20, 30], &[1, 1, 0]), Ok(vec![20, 20, 10]));
        assert_eq!(gather(&[10], &[3]), Err("order holds 3, out of range for 1 images".into()));
    }

    #[test]
    fn splits_boxes_by_offsets() {
        let values = [0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0];
        let rows = split_boxes(&values, &[0, 0, 2], 2).unwrap();
        assert_eq!((rows[0].len(), rows[1].len()), (0, 2));
        assert!(split_boxes(&values, &[0, 3], 1).unwrap_err().contains("out of range"));
        assert!(split_boxes(&values, &[0], 1).is_err());
    }
}
