// Adopting Eigen matrices as views without copying when they have direct
// access (Matrix, Map, Ref, blocks), evaluating expressions otherwise.
#pragma once

#include <type_traits>

#include <Eigen/Core>

#include "../tensor.hpp"

namespace streamattn::detail {

/// Holds an Eigen matrix (or a reference to one) with direct access, so that
/// `as_bshd()` can describe it as a one-batch, one-head (1, rows, 1, cols) view.
template <class Derived>
class eigen_operand {
  static constexpr bool direct = (Eigen::internal::traits<Derived>::Flags & Eigen::DirectAccessBit) != 0;
  using plain = typename Derived::PlainObject;
  using storage = std::conditional_t<direct, const Derived&, plain>;

 public:
  using scalar = typename Derived::Scalar;
  explicit eigen_operand(const Eigen::MatrixBase<Derived>& m) : m_(m.derived()) {}

  view<const scalar, 4> as_bshd() const {
    return {m_.data(), {1, m_.rows(), 1, m_.cols()}, {0, m_.rowStride(), 0, m_.colStride()}};
  }

 private:
  storage m_;
};

}  // namespace streamattn::detail
