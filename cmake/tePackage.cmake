# tePackage.cmake - the development package that `cmake --install` lays out
# besides libte.so and the headers: a relocatable te.pc and the CMake package
# (find_package(te): te::te, te::plugin_headers, TE_PLUGIN_DIR).
include(CMakePackageConfigHelpers)

# te.pc finds its prefix from its own place (${pcfiledir}), so an install
# with `cmake --install --prefix P`, DESTDIR or a moved tree stays right.
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}" OR IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(TE_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
  set(TE_PC_LIBDIR "${CMAKE_INSTALL_FULL_LIBDIR}")
  set(TE_PC_INCLUDEDIR "${CMAKE_INSTALL_FULL_INCLUDEDIR}")
else()
  file(RELATIVE_PATH _te_pc_up "/p/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/p")
  string(REGEX REPLACE "/$" "" _te_pc_up "${_te_pc_up}")
  set(TE_PC_PREFIX "\${pcfiledir}/${_te_pc_up}")
  set(TE_PC_LIBDIR "\${prefix}/${CMAKE_INSTALL_LIBDIR}")
  set(TE_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()

# Plugin authors need the headers and nothing to link: plugins never link libte.so.
add_library(te_plugin_headers INTERFACE)
set_target_properties(te_plugin_headers PROPERTIES EXPORT_NAME plugin_headers)
target_include_directories(te_plugin_headers INTERFACE
  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
add_library(te::plugin_headers ALIAS te_plugin_headers)
add_library(te::te ALIAS te)
install(TARGETS te_plugin_headers EXPORT teTargets)

set(TE_CMAKE_INSTALL_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/te)
set(TE_PLUGIN_INSTALL_RELDIR ${CMAKE_INSTALL_LIBDIR}/${TE_PLUGIN_SUBDIR})
install(EXPORT teTargets NAMESPACE te:: FILE teTargets.cmake DESTINATION ${TE_CMAKE_INSTALL_DIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/teConfig.cmake.in
  ${CMAKE_BINARY_DIR}/cmake/teConfig.cmake
  INSTALL_DESTINATION ${TE_CMAKE_INSTALL_DIR}
  PATH_VARS CMAKE_INSTALL_INCLUDEDIR CMAKE_INSTALL_LIBDIR TE_PLUGIN_INSTALL_RELDIR)
write_basic_package_version_file(${CMAKE_BINARY_DIR}/cmake/teConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(FILES ${CMAKE_BINARY_DIR}/cmake/teConfig.cmake ${CMAKE_BINARY_DIR}/cmake/teConfigVersion.cmake
  DESTINATION ${TE_CMAKE_INSTALL_DIR})
