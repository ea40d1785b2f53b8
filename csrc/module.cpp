// rnnkit._C: loading it registers the ops (TORCH_LIBRARY in ops.cpp). The
// module itself only tells Python how it was built.
#include <Python.h>

namespace {

PyObject* built_with_cuda(PyObject*, PyObject*) {
#ifdef RNNKIT_WITH_CUDA
  Py_RETURN_TRUE;
#else
  Py_RETURN_FALSE;
#endif
}

PyMethodDef methods[] = {
    {"built_with_cuda", built_with_cuda, METH_NOARGS, "True if the CUDA kernels were compiled."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "rnnkit's compiled ops", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module_def); }
