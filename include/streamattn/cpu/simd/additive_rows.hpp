// Moving token rows in and out of the simd additive kernels: reading rows as
// contiguous accumulation-type features (in place when the storage already
// is, converted into a tile buffer otherwise), and producing the output rows
// U = V ⊙ k̄ or Y = U W_tᵀ + b_t (+ Q), the latter with Eigen's GEMM on tiles
// of rows so that the extra memory stays one tile.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include "../../config.hpp"
#include "../../detail/additive_params.hpp"
#include "../../detail/element.hpp"
#include "../../detail/simd_diagnostics.hpp"
#include "additive_scores.hpp"
#include "packet.hpp"

STREAMATTN_SIMD_DIAGNOSTICS_BEGIN

namespace streamattn::detail::simd_additive {

/// Rows per output tile: the M of each transform GEMM.
inline constexpr index_t output_tile_tokens = 512;

/// Outputs at least this large are written with streaming stores.
inline constexpr double stream_output_bytes = 64.0 * 1024 * 1024;

/// Reads rows of a (B, N, D) operand as contiguous Acc features.
template <class Acc, class T>
class row_reader {
 public:
  row_reader() = default;
  row_reader(const token_operand<const T>& x, index_t dim, index_t slots, bool compacts = false) {
    reshape(x, dim, slots, compacts);
  }

  /// `slots` rows of buffer, allocated only if rows must be converted or a
  /// tile may leave rows out (`compacts`: it is then compacted here).
  void reshape(const token_operand<const T>& x, index_t dim, index_t slots, bool compacts = false) {
    x_ = x;
    dim_ = dim;
    direct_ = std::is_same_v<T, Acc> && (x.feature_stride == 1 || dim <= 1);
    if (!direct_ || compacts) buffer_.resize(static_cast<std::size_t>(slots * std::max<index_t>(dim, 1)));
  }

  /// Rows [first, end) of sequence b (at most tile_tokens) as a tile; their
  /// mask bits `keep(j)` go to keep_out. With `skip_masked` rows whose bit
  /// is false are left out (exclude mode: never read). In place when the
  /// storage already is contiguous Acc features and no row is left out;
  /// otherwise the rows are converted into the buffer, one after another.
  template <class Keep>
  row_tile<Acc> tile(index_t b, index_t first, index_t end, Keep&& keep, bool skip_masked, bool* keep_out) {
    bool all_in = true;
    for (index_t j = first; j < end; ++j) {
      keep_out[j - first] = keep(j);
      all_in = all_in && (keep_out[j - first] || !skip_masked);
    }
    if constexpr (std::is_same_v<T, Acc>) {
      if (direct_ && all_in) return {x_.row(b, first), x_.token_stride, end - first};
    }
    index_t count = 0;
    for (index_t j = first; j < end; ++j) {
      const bool k = keep_out[j - first];
      if (!k && skip_masked) continue;
      keep_out[count] = k;
      copy_row(b, j, count++);
    }
    return {buffer_.data(), dim_, count};
  }

  /// Row (b, j) in the caller's storage when rows are read in place, else null.
  const Acc* in_place_row(index_t b, index_t j) const {
    if constexpr (std::is_same_v<T, Acc>) {
      if (direct_) return x_.row(b, j);
    }
    return nullptr;
  }

  /// Row (b, j); a converted row occupies buffer slot `slot` until reused.
  const Acc* row(index_t b, index_t j, index_t slot) {
    if constexpr (std::is_same_v<T, Acc>) {
      if (direct_) return x_.row(b, j);
    }
    return copy_row(b, j, slot);
  }

 private:
  const Acc* copy_row(index_t b, index_t j, index_t slot) {
    const T* from = x_.row(b, j);
    Acc* to = buffer_.data() + slot * dim_;
    for (index_t f = 0; f < dim_; ++f) to[f] = convert<Acc>(from[f * x_.feature_stride]);
    return to;
  }

  token_operand<const T> x_{};
  index_t dim_ = 0;
  bool direct_ = false;
  std::vector<Acc> buffer_;
};

template <class Acc>
using row_major_matrix = Eigen::Matrix<Acc, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class Acc>
using col_major_matrix = Eigen::Matrix<Acc, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;

/// W_t as an Eigen matrix: mapped in place when one of its strides is 1,
/// copied once per call otherwise (O(D^2), independent of N).
template <class Acc>
class transform_matrix {
 public:
  template <class T, class Tout>
  explicit transform_matrix(const fastformer_params<T, Acc, Tout>& p) : dim_(p.shape.dim) {
    if (!p.has_transform()) return;
    if (p.transform_col_stride == 1 && p.transform_row_stride >= dim_) {
      layout_ = layout::row_major;
      data_ = p.transform;
      outer_ = p.transform_row_stride;
    } else if (p.transform_row_stride == 1 && p.transform_col_stride >= dim_) {
      layout_ = layout::col_major;
      data_ = p.transform;
      outer_ = p.transform_col_stride;
    } else {
      layout_ = layout::row_major;
      copy_.resize(static_cast<std::size_t>(dim_ * dim_));
      for (index_t o = 0; o < dim_; ++o)
        for (index_t i = 0; i < dim_; ++i) copy_[static_cast<std::size_t>(o * dim_ + i)] = p.transform_at(o, i);
      data_ = copy_.data();
      outer_ = dim_;
    }
    bias_.resize(static_cast<std::size_t>(dim_));
    for (index_t o = 0; o < dim_; ++o) bias_[static_cast<std::size_t>(o)] = p.transform_bias_of(o);
  }

  bool present() const { return data_ != nullptr; }
  const Acc* bias() const { return bias_.data(); }

  /// Calls f with W_t (D x D, out x in) as an Eigen expression.
  template <class F>
  void visit(F&& f) const {
    using stride = Eigen::OuterStride<>;
    if (layout_ == layout::row_major)
      f(Eigen::Map<const row_major_matrix<Acc>, Eigen::Unaligned, stride>(data_, dim_, dim_, stride(outer_)));
    else
      f(Eigen::Map<const col_major_matrix<Acc>, Eigen::Unaligned, stride>(data_, dim_, dim_, stride(outer_)));
  }

 private:
  enum class layout { row_major, col_major };
  index_t dim_;
  layout layout_ = layout::row_major;
  const Acc* data_ = nullptr;
  index_t outer_ = 0;
  std::vector<Acc> copy_, bias_;
};

/// Writes output rows of one sequence from V and k̄ (k̄ may differ per row:
/// causal). Holds one tile of U (and of Y when `out` cannot take the GEMM's
/// result in place).
template <class Acc, class T, class Tout>
class output_writer {
 public:
  template <class W>
  void reshape(const fastformer_params<T, W, Tout>& p) {
    const index_t dim = p.shape.dim;
    dim_ = dim;
    q_ = p.q;
    v_ = p.v;
    out_ = p.out;
    residual_ = p.residual;
    values_.reshape(p.v, dim, output_tile_tokens);
    queries_.reshape(p.q, dim, output_tile_tokens);
    out_direct_ = std::is_same_v<Tout, Acc> && (p.out.feature_stride == 1 || dim <= 1);
    gemm_in_place_ = std::is_same_v<Tout, Acc> && p.out.feature_stride == 1 && p.out.token_stride >= dim;
    // Stream U past the caches when it is far larger than they are: it
    // would only evict the inputs. Small outputs stay cached for the caller.
    stream_out_ = out_direct_ && !p.has_transform() &&
                  static_cast<double>(p.shape.batch * p.shape.tokens * dim) * sizeof(Tout) >= stream_output_bytes;
    if (p.has_transform()) {
      u_.resize(static_cast<std::size_t>(output_tile_tokens * dim));
      if (!gemm_in_place_) y_.resize(u_.size());
    }
  }

  /// Rows [first, first + count) of sequence b; k̄ of row r at
  /// kbar + r * kbar_stride (stride 0: one k̄ for all rows).
  void write(const transform_matrix<Acc>& transform, index_t b, index_t first, index_t count, const Acc* kbar,
             index_t kbar_stride) {
    for (index_t done = 0; done < count; done += output_tile_tokens) {
      const index_t rows = std::min(output_tile_tokens, count - done);
      if (transform.present())
        write_transformed(transform, b, first + done, rows, kbar + done * kbar_stride, kbar_stride);
      else
        write_plain(b, first + done, rows, kbar + done * kbar_stride, kbar_stride);
    }
    if (stream_out_) simd::stream_fence();  // streaming stores are weakly ordered
  }

 private:
  void write_plain(index_t b, index_t first, index_t rows, const Acc* kbar, index_t kbar_stride) {
    using P = simd::packet<Acc>;
    constexpr index_t L = simd::packet_size<Acc>;
    namespace ei = Eigen::internal;
    for (index_t r = 0; r < rows; ++r) {
      const Acc* v = values_.row(b, first + r, r);
      const Acc* k = kbar + r * kbar_stride;
      Tout* out = out_.row(b, first + r);
      if constexpr (std::is_same_v<Tout, Acc>) {
        if (out_direct_) {
          index_t f = 0;
          if (stream_out_) {
            for (; f < dim_ && reinterpret_cast<std::uintptr_t>(out + f) % sizeof(P) != 0; ++f) out[f] = v[f] * k[f];
            for (; f + L <= dim_; f += L) simd::stream_packet(out + f, ei::pmul(ei::ploadu<P>(v + f), ei::ploadu<P>(k + f)));
          }
          for (; f + L <= dim_; f += L) ei::pstoreu(out + f, ei::pmul(ei::ploadu<P>(v + f), ei::ploadu<P>(k + f)));
          for (; f < dim_; ++f) out[f] = v[f] * k[f];
          continue;
        }
      }
      for (index_t f = 0; f < dim_; ++f) out[f * out_.feature_stride] = convert<Tout>(v[f] * k[f]);
    }
  }

  // Y = b_t (+ Q) is written first and the GEMM accumulates U W_tᵀ onto it,
  // so the rows of Q are read once per tile (for U and the residual) and Y
  // is not walked again after the product.
  void write_transformed(const transform_matrix<Acc>& transform, index_t b, index_t first, index_t rows,
                         const Acc* kbar, index_t kbar_stride) {
    using P = simd::packet<Acc>;
    constexpr index_t L = simd::packet_size<Acc>;
    namespace ei = Eigen::internal;
    Acc* y_data = y_.data();
    index_t y_stride = dim_;
    if constexpr (std::is_same_v<Tout, Acc>) {
      if (gemm_in_place_) {
        y_data = out_.row(b, first);
        y_stride = out_.token_stride;
      }
    }
    const Acc* bias = transform.bias();
    for (index_t r = 0; r < rows; ++r) {
      const Acc* v = values_.row(b, first + r, r);
      const Acc* k = kbar + r * kbar_stride;
      Acc* u = u_.data() + r * dim_;
      Acc* yr = y_data + r * y_stride;
      const Acc* q = residual_ ? queries_.row(b, first + r, r) : nullptr;
      index_t f = 0;
      for (; f + L <= dim_; f += L) {
        ei::pstoreu(u + f, ei::pmul(ei::ploadu<P>(v + f), ei::ploadu<P>(k + f)));
        const P base = ei::ploadu<P>(bias + f);
        ei::pstoreu(yr + f, q ? ei::padd(base, ei::ploadu<P>(q + f)) : base);
      }
      for (; f < dim_; ++f) {
        u[f] = v[f] * k[f];
        yr[f] = q ? bias[f] + q[f] : bias[f];
      }
    }
    using stride = Eigen::OuterStride<>;
    const Eigen::Map<const row_major_matrix<Acc>> u(u_.data(), rows, dim_);
    Eigen::Map<row_major_matrix<Acc>, Eigen::Unaligned, stride> y(y_data, rows, dim_, stride(y_stride));
    transform.visit([&](const auto& wt) { y.noalias() += u * wt.transpose(); });
    if (y_data == y_.data()) {
      for (index_t r = 0; r < rows; ++r) {
        Tout* out = out_.row(b, first + r);
        const Acc* yr = y_data + r * y_stride;
        for (index_t g = 0; g < dim_; ++g) out[g * out_.feature_stride] = convert<Tout>(yr[g]);
      }
    }
  }

  index_t dim_ = 0;
  token_operand<const T> q_{}, v_{};
  token_operand<Tout> out_{};
  bool residual_ = true, out_direct_ = false, gemm_in_place_ = false, stream_out_ = false;
  row_reader<Acc, T> values_, queries_;
  std::vector<Acc> u_, y_;
};

}  // namespace streamattn::detail::simd_additive

STREAMATTN_SIMD_DIAGNOSTICS_END
