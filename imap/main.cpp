#include "imap/dovecot_runner.hpp"

int main(int argc, char** argv) { return mailnet::imap::dovecot_runner_main(argc, argv); }
