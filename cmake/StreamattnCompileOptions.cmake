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

# GCC before 13 writes its AVX-512 "undefined" intrinsics as `__m512 __Y = __Y;`
# and, at -O1 (the sanitizer preset), reports every inlined use as
# -Wuninitialized (GCC bug 105593): 120 warnings from Eigen's ptranspose alone
# on an AVX-512 machine. Silenced only where that header is compiled.
set(STREAMATTN_GCC_AVX512_UNDEFINED_WARNS OFF)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  include(CheckCXXSourceCompiles)
  set(CMAKE_REQUIRED_FLAGS "${STREAMATTN_ARCH_FLAGS}")
  check_cxx_source_compiles("#ifndef __AVX512F__\n#error no AVX-512\n#endif\nint main() { return 0; }"
                            STREAMATTN_TARGETS_AVX512)
  unset(CMAKE_REQUIRED_FLAGS)
  set(STREAMATTN_GCC_AVX512_UNDEFINED_WARNS ${STREAMATTN_TARGETS_AVX512})
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
    if(STREAMATTN_GCC_AVX512_UNDEFINED_WARNS)
      target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Wno-uninitialized>)
    endif()
  elseif(MSVC)
    target_compile_options(${target} PRIVATE /W4 /permissive-)
  endif()
endfunction()
