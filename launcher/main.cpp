#include "launcher/launcher_main.hpp"

int main(int argc, char** argv) { return mailnet::launcher::launcher_main(argc, argv); }
