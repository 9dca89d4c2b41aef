"""Model compression: pruning, weight sharing, fixed point, Huffman coding, low rank, distillation."""
