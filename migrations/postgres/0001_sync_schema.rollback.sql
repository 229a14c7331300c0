drop schema if exists sync cascade;
