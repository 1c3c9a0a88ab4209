// The Python extension module mmh_ext._C. Importing it loads this shared library, whose static initialisers register
// the operators with the PyTorch dispatcher; it defines no Python functions (pure torch.library, limited API).
#include <Python.h>

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "mmh_ext compiled operators (registered with torch.library)", -1, nullptr,
  };
  return PyModule_Create(&module_def);
}
}
