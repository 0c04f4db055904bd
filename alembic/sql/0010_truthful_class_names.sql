-- BreastMNIST's class 1 is "normal, benign": harmonised as US/breast/benign_or_normal (anatomical by the
-- kind rule: a normal finding), not US/breast/normal. Renames the class of a database imported before,
-- when only BreastMNIST images carry it and the new key is not taken.
update cbir.label l
set key = 'US/breast/benign_or_normal', finding = 'benign_or_normal'
where l.key = 'US/breast/normal'
  and not exists (select 1 from cbir.label n where n.key = 'US/breast/benign_or_normal')
  and exists (select 1 from cbir.label_map m join cbir.dataset d on d.id = m.dataset_id
              where m.label_id = l.id and d.kind = 'medmnist' and m.source_label = 'normal, benign')
  and not exists (select 1 from cbir.label_map m
                  where m.label_id = l.id and m.source_label <> 'normal, benign');
