# Compile options for streamattn's own tests, benchmarks and examples (never
# imposed on consumers of the library).
include(CheckCXXCompilerFlag)

set(STREAMATTN_ARCH_FLAGS "")
if(STREAMATTN_NATIVE)
  check_cxx_compiler_flag("-march=native" STREAMATTN_HAS_MARCH_NATIVE)
  if(STREAMATTN_HAS_MARCH_NATIVE)
    set(STREAMATTN_ARCH_FLAGS "-march=native")
  else()
    check_cxx_compiler_flag("-mcpu=native" STREAMATTN_HAS_MCPU_NATIVE)
    if(STREAMATTN_HAS_MCPU_NATIVE)
      set(STREAMATTN_ARCH_FLAGS "-mcpu=native")
    endif()
  endif()
endif()

# streamattn_configure_target(<target>): warnings, architecture flags.
function(streamattn_configure_target target)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic $<$<COMPILE_LANGUAGE:CXX>:${STREAMATTN_ARCH_FLAGS}>)
    # GCC 12 reports -Wmaybe-uninitialized inside its own AVX-512 intrinsic
    # headers when Eigen's packet code is inlined (a known false positive).
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
      target_compile_options(${target} PRIVATE -Wno-maybe-uninitialized)
    endif()
  elseif(MSVC)
    target_compile_options(${target} PRIVATE /W4 /permissive-)
  endif()
endfunction()
